"""Where data lives: one rule for the shared data root, one for prepared files.

The shared data (public datasets that may not be redistributed) is never in the repository:
it is the folder `RECJAX_DATA` names, by default `shared/data` beside the checkout
(`<repo>/../shared/data`). Files that `recjax prepare` derives from it (MovieLens
leave-one-out rows, ...) go to `RECJAX_PREPARED`, by default `recjax_prepared` under the
system's temporary directory: outside the repository, and never written by loading a config.
Configs call `shared` and `prepared` instead of re-deriving the paths, so that a user moves
the data with one variable. Both functions only compute paths; nothing here reads or writes.
"""

import os
import pathlib
import tempfile

DATA_ENV = "RECJAX_DATA"
PREPARED_ENV = "RECJAX_PREPARED"
# recjax/datasets/paths.py -> the checkout -> the folder beside it
DEFAULT_ROOT = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"


def root(environ=None) -> pathlib.Path:
  """The shared data root: $RECJAX_DATA, else `shared/data` beside the checkout."""
  environ = os.environ if environ is None else environ
  return pathlib.Path(environ.get(DATA_ENV) or DEFAULT_ROOT)


def shared(*parts: str, environ=None) -> pathlib.Path:
  """A path under the shared data root, e.g. `shared("movielens", "ml-100k")`."""
  return root(environ).joinpath(*parts)


def prepared_root(environ=None) -> pathlib.Path:
  """Where `recjax prepare` writes: $RECJAX_PREPARED, else the temp dir's recjax_prepared."""
  environ = os.environ if environ is None else environ
  return pathlib.Path(environ.get(PREPARED_ENV)
                      or pathlib.Path(tempfile.gettempdir()) / "recjax_prepared")


def prepared(dataset: str, variant: str, environ=None) -> pathlib.Path:
  """The folder of one prepared dataset variant (e.g. movielens, smoke)."""
  return prepared_root(environ) / dataset / variant


def prepare_command(dataset: str, variant: str) -> str:
  """The command that writes `prepared(dataset, variant)`, for messages and docstrings."""
  return f"recjax prepare --dataset {dataset} --variant {variant}"


def missing_prepared(patterns, environ=None) -> str | None:
  """A message for the first of `patterns` that lies in a prepared folder and is absent
  (naming the file and the command that writes it), else None."""
  base = prepared_root(environ).resolve()
  for pattern in patterns:
    path = pathlib.Path(pattern).resolve()
    if path.exists() or not path.is_relative_to(base):
      continue
    parts = path.relative_to(base).parts
    if len(parts) >= 3:
      return (f"{pattern}: prepared file not found; write it with "
              f"`{prepare_command(parts[0], parts[1])}`")
  return None

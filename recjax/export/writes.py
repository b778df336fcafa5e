"""Which exports a run writes, decided here once for `recjax train` and `recjax export`.

A model is served whole (`saved_model`); a recall model is also served tower by tower (the
item tower offline over the corpus, the user tower per request), so its towers are written
beside the whole model. `write` is that rule; `write_run` lays a training run's exports out
in its workdir: `export/latest` (with the towers in `export/`), `export/best` and
`export/best.json`, and the `saved_model` link to the latest.
"""

import json
import pathlib
import shutil

from recjax.export import saved_model
from recjax.export import towers


def write(experiment, state, directory) -> dict[str, str]:
  """The whole model's SavedModel at `directory` and, for a recall model, each tower's beside
  it (`user_tower`, `item_tower` in its parent): {"saved_model": path, "user_tower": ...}."""
  directory = pathlib.Path(directory).absolute()
  written = {"saved_model": str(saved_model.export(experiment, state, directory))}
  if any(t.kind.retrieval for t in experiment.tasks):   # two towers, each served alone
    written |= towers.export_towers(experiment, state, directory.parent)
  return written


def write_run(experiment, workdir, state, best_state, best: dict) -> dict:
  """A run's exports: `export/latest` from the final `state`, `export/best` from `best_state`
  (a copy of the latest where `best_state` is None: the final state is the best), and
  `export/best.json` holding `best` ({"step", "metric", "value"}); `saved_model` stays a
  link to the latest. Returns the summary's "saved_model" and "export" entries."""
  workdir = pathlib.Path(workdir)
  root = workdir / "export"
  written = write(experiment, state, root / "latest")
  latest = written.pop("saved_model")
  if best_state is None:
    tmp = root / ".best-copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(latest, tmp)
    shutil.rmtree(root / "best", ignore_errors=True)
    tmp.rename(root / "best")
    best_dir = root / "best"
  else:
    best_dir = saved_model.export(experiment, best_state, root / "best")
  (root / "best.json").write_text(json.dumps(best))
  alias = workdir / "saved_model"
  if alias.is_symlink() or not alias.exists():
    alias.unlink(missing_ok=True)
    alias.symlink_to(pathlib.Path("export") / "latest")
  return {"saved_model": latest, "export": {"latest": latest, "best": str(best_dir),
                                            "best_step": best["step"], **written}}

"""Checks of a model's fields, run when the experiment is validated, not inside the module.

A model may define `check(self, groups)` (decorated `nn.nowrap`, so Flax runs it outside any
init or apply), where `groups` maps each group name to its `features.spec.Group`.
`recjax.config` calls it right after building the model, so a bad field (a structure that
does not exist, heads that do not divide the embedding) exits with `recjax: error:
model.<field>: ...` before any data is read, instead of a traceback at the first init.
These helpers keep each message in one form: the key, the value, what is valid.
"""

import dataclasses
from collections.abc import Sequence

from recjax.errors import ConfigError


def one_of(model, field: str, valid: Sequence[str]) -> None:
  value = getattr(model, field)
  if value not in valid:
    raise ConfigError(f"model.{field}: {value!r} is not one of {', '.join(valid)}")


def at_least(model, field: str, low: int) -> None:
  value = getattr(model, field)
  if value < low:
    raise ConfigError(f"model.{field}: {value} is less than {low}")


def non_empty(model, field: str) -> None:
  if not getattr(model, field):
    raise ConfigError(f"model.{field}: give at least one entry")


def distinct(model, field: str = "tasks", extra: Sequence[str] = ()) -> None:
  """A multi-task model's output names: at least one, none repeated (with `extra` ones)."""
  names = tuple(getattr(model, field)) + tuple(extra)
  if not getattr(model, field) or len(set(names)) != len(names):
    raise ConfigError(f"model.{field}: {names!r}: give one or more distinct output names")


def group(model, field: str, groups: dict, sequence: bool | None = None):
  """The group that `model.<field>` names; with `sequence`, checks its combiner too."""
  name = getattr(model, field)
  if name not in groups:
    raise ConfigError(f"model.{field}: {name!r} is not a group; groups: "
                      f"{', '.join(sorted(groups))}")
  found = groups[name]
  if sequence is not None and (found.combiner == "none") != sequence:
    raise ConfigError(f"model.{field}: group {name!r} must be "
                      + ("a sequence group (combiner 'none')" if sequence
                         else "a pooled group (not combiner 'none')"))
  return found


def sizes(model) -> None:
  """Layer widths are 1 or more and dimensions not negative (0 may mean "none", as a
  transformer's ffn_dim does): a bad one would crash at init, not name its key."""
  for field in dataclasses.fields(model):
    name, value = field.name, getattr(model, field.name, None)
    widths = name == "hidden" or name.endswith("_hidden") or name in ("num_heads",)
    sized = widths or name.endswith(("_dim", "_units")) or name.startswith("num_")
    values = value if isinstance(value, tuple) else (value,)
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    if sized and any(v < (1 if widths else 0) for v in ints):
      what = "a width under 1" if widths else "a negative size"
      raise ConfigError(f"model.{name}: {value!r} holds {what}")

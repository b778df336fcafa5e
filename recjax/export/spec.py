"""The export and serving sections of a config: where the SavedModels go, and the serving
world (the user and item entities) that the rank signature, the feature store and the
server share.

Frozen dataclasses whose checks name each bad field (`recjax.config` builds them from the
config file's `export` and `serving` sections).
"""

import dataclasses
from typing import Any

from recjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ExportSpec:
  """SavedModels in TF-Serving's layout: `<workdir>/export/<model_name>/<version>/`, the
  version the global step; `keep` newest versions stay (and the best one)."""
  enabled: bool = True
  model_name: str = ""              # "": the config file's name without .py
  keep: int = 3

  def __post_init__(self):
    if self.keep < 1:
      raise ConfigError(f"export.keep: {self.keep} is not 1 or more")
    if self.model_name and not all(c.isalnum() or c in "_-." for c in self.model_name):
      raise ConfigError(f"export.model_name: {self.model_name!r} is not a name of letters, "
                        "digits, '_', '-' and '.' (it is a directory and a URL part)")


@dataclasses.dataclass(frozen=True)
class EntitySpec:
  """One entity of the serving world (the user, the item): the column holding its key and
  the raw columns stored for it in the feature store (the key column may be one of them)."""
  key: str
  columns: tuple[str, ...] = ()
  files: tuple[str, ...] = ()       # Parquet tables of the entity: the embedded store's data


MIN_PRESENT = 0.9                   # serving.replay.min_present of a column not named


@dataclasses.dataclass(frozen=True)
class ReplaySpec:
  """The replay log (`serving.replay`): what the ranking service logs of each request it
  scores, and how `recjax replay join / coverage` read it back."""
  enabled: bool = True              # False: the section is kept, nothing is logged
  dir: str = ""                     # where the Parquet parts go; "": <workdir>/replay
  sample: float = 1.0               # share of rank requests logged (by event id, stable)
  part_rows: int = 100_000          # a part closes at this many rows ...
  flush_seconds: float = 5.0        # ... or this long after its first row: what a kill loses
  max_buffered_rows: int = 2_000_000  # past this, rows are dropped (counted), never waited on
  label_window_s: float = 3600.0    # a label event later than this after the impression is
                                    #   outside the window: not joined (counted)
  sum_labels: tuple[str, ...] = ()  # label columns summed over a row's events (watch time);
                                    #   the others take the maximum (a click)
  coverage_window_s: float = 3600.0  # `replay coverage` reports per window of this length
  min_present: Any = MIN_PRESENT    # a feature present (not defaulted) in fewer rows of a
                                    #   window raises the alarm; {column: share} per column
  max_psi: float = 0.25             # a feature whose distribution moved further from the
                                    #   training data's (population stability index) too

  def __post_init__(self):
    if not 0 < self.sample <= 1:
      raise ConfigError(f"serving.replay.sample: {self.sample} is not in (0, 1]")
    for name in ("part_rows", "max_buffered_rows"):
      if getattr(self, name) < 1:
        raise ConfigError(f"serving.replay.{name}: {getattr(self, name)} is not 1 or more")
    for name in ("flush_seconds", "label_window_s", "coverage_window_s", "max_psi"):
      if getattr(self, name) <= 0:
        raise ConfigError(f"serving.replay.{name}: {getattr(self, name)} is not positive")
    shares = self.min_present if isinstance(self.min_present, dict) else {"": self.min_present}
    for column, share in shares.items():
      if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ConfigError(f"serving.replay.min_present{'.' + column if column else ''}: "
                          f"{share!r} is not a share in [0, 1]")

  def min_present_of(self, column: str) -> float:
    if isinstance(self.min_present, dict):
      return float(self.min_present.get(column, MIN_PRESENT))
    return float(self.min_present)


@dataclasses.dataclass(frozen=True)
class ServingSpec:
  """What `recjax serve` and the feature store need beyond the model. The raw columns the
  features read are the user's, the item's, or the request's context (the rest)."""
  user: EntitySpec | None = None
  item: EntitySpec | None = None
  store: str = ""                   # redis://HOST:PORT/DB; "": the embedded store (files)
  namespace: str = ""               # key prefix in the store; "": export.model_name
  cache_items: int = 100_000        # LRU cache of item entities in each server process
  store_timeout_ms: float = 50.0    # a slower store answer serves defaults (counted)
  max_candidates: int = 2_000
  max_request_bytes: int = 8 << 20
  poll_seconds: float = 2.0         # how often the server looks for a new version
  defaults: Any = None              # {column: raw value} served for a missing entity or
                                    #   context value; else 0.0 for numbers, "" for strings
  replay: ReplaySpec | None = None  # the replay log of scored requests; None: not logged

  def __post_init__(self):
    for name in ("cache_items", "max_candidates", "max_request_bytes"):
      if getattr(self, name) < (0 if name == "cache_items" else 1):
        raise ConfigError(f"serving.{name}: {getattr(self, name)} is too small")
    for name in ("store_timeout_ms", "poll_seconds"):
      if getattr(self, name) <= 0:
        raise ConfigError(f"serving.{name}: {getattr(self, name)} is not positive")

  def entities(self) -> dict[str, EntitySpec]:
    return {name: e for name in ("user", "item") if (e := getattr(self, name)) is not None}

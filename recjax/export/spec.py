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

  def __post_init__(self):
    for name in ("cache_items", "max_candidates", "max_request_bytes"):
      if getattr(self, name) < (0 if name == "cache_items" else 1):
        raise ConfigError(f"serving.{name}: {getattr(self, name)} is too small")
    for name in ("store_timeout_ms", "poll_seconds"):
      if getattr(self, name) <= 0:
        raise ConfigError(f"serving.{name}: {getattr(self, name)} is not positive")

  def entities(self) -> dict[str, EntitySpec]:
    return {name: e for name in ("user", "item") if (e := getattr(self, name)) is not None}

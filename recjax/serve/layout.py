"""How an entity is stored: its raw columns in one msgpack value per entity, under versioned
key names.

An entity's value is the msgpack array of its raw `columns` in the config's order: float32
for the columns a feature reads as numbers, strings for the others (a sequence column stays
its raw "a|b|c" string), nil for a null. Raw, not transformed: the SavedModel applies its
own transforms to what the server feeds it. One key per entity, not one hash field per
column: a candidate set is then one MGET, and 15 columns cost one key's overhead, not 15.
Floats are packed as msgpack float32 (5 bytes), so a value read back is the float32 the
SavedModel's signature takes, exactly.

Key names (`Keys`), for namespace `ns` (the export's model name) and entity `e`:

  ns:e:current          the version readers use (a decimal string)
  ns:e:VERSION:KEY      the packed values of entity KEY in that version
  ns:e:layout:VERSION   JSON of the version's key column, columns and dtypes
  ns:e:serial           the counter that numbers versions
  ns:e:loading          versions being written (a crashed load's are cleaned by the next)
  ns:e:retired          replaced versions whose keys are not yet set to expire

The layout sits at `layout:VERSION`, not `VERSION:layout`, so that no entity key (an item
called "layout") can collide with it; versions are numbers, never `layout` or `current`.
"""

import dataclasses
import json

import msgpack

from recjax.errors import ConfigError
from recjax.export import saved_model
from recjax.serve.errors import LayoutMismatch

FLOAT32, STRING = "float32", "string"

_pack = msgpack.Packer(use_single_float=True).pack


def pack(values) -> bytes:
  """A list of raw values (float, str or None, in column order) as one msgpack array."""
  return _pack(list(values))


def unpack(data: bytes) -> tuple:
  """The inverse of `pack`: the values as a tuple (floats are float32 values, exactly)."""
  return msgpack.unpackb(data, use_list=False, raw=False)


@dataclasses.dataclass(frozen=True)
class Layout:
  """An entity's stored columns and their dtypes, in value order, and its key column."""
  entity: str
  key: str
  columns: tuple[str, ...]
  dtypes: tuple[str, ...]           # FLOAT32 | STRING per column

  def to_json(self) -> str:
    return json.dumps({"entity": self.entity, "key": self.key, "columns": list(self.columns),
                       "dtypes": list(self.dtypes)})

  def check(self, stored: str | bytes | None, where: str) -> None:
    """Raises `LayoutMismatch` unless `stored` (a version's layout JSON) is this layout."""
    if stored is None:
      raise LayoutMismatch(f"{where}: no layout is stored; load the {self.entity} entity "
                           "again with this config")
    found = json.loads(stored)
    expected = json.loads(self.to_json())
    if found == expected:
      return
    diffs = [f"{name} {found.get(name)!r} (the config has {expected[name]!r})"
             for name in expected if found.get(name) != expected[name]]
    raise LayoutMismatch(f"{where}: the stored layout has {'; '.join(diffs)}; load the "
                         f"{self.entity} entity again with this config, or serve the config "
                         "that loaded it")

  def coerce(self, column: str, value):
    """A raw value in its column's stored type (what a writer may give for it)."""
    if value is None:
      return None
    return float(value) if self.dtypes[self.columns.index(column)] == FLOAT32 else str(value)


def layouts(experiment) -> dict[str, Layout]:
  """Each configured entity's layout. A column's dtype is the one the SavedModel's signature
  gives it (`saved_model.serving_inputs`), so the store and the model cannot disagree."""
  inputs = saved_model.serving_inputs(experiment)
  out = {}
  for name, entity in experiment.serving.entities().items():
    dtypes = tuple(FLOAT32 if inputs[c].dtype.name == FLOAT32 else STRING
                   for c in entity.columns)
    out[name] = Layout(name, entity.key, tuple(entity.columns), dtypes)
  return out


def layout_of(experiment, entity: str) -> Layout:
  found = layouts(experiment)
  if entity not in found:
    raise ConfigError(f"serving.{entity}: no such entity is configured; configured: "
                      f"{', '.join(found) or 'none'}")
  return found[entity]


@dataclasses.dataclass(frozen=True)
class Keys:
  """The Redis key names of one entity in one namespace (see the module docstring)."""
  namespace: str
  entity: str

  @property
  def base(self) -> str:
    return f"{self.namespace}:{self.entity}:"

  @property
  def current(self) -> str:
    return self.base + "current"

  @property
  def serial(self) -> str:
    return self.base + "serial"

  @property
  def loading(self) -> str:
    return self.base + "loading"

  @property
  def retired(self) -> str:
    return self.base + "retired"

  def layout(self, version: str) -> str:
    return f"{self.base}layout:{version}"

  def prefix(self, version: str) -> str:
    """The prefix of every entity key of `version`: `prefix + key` is the key's name."""
    return f"{self.base}{version}:"

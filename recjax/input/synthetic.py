"""A synthetic data source: columns from a schema, labels from a hidden teacher.

Tests and benchmarks need data of any shape and size without shipping files, and models must
be able to learn from it. `generate` writes a pyarrow table of raw columns exactly as a file
would hold them (strings like "c123", "|"-joined tags and behaviour lists, "key:value" maps,
numbers), so every feature kind reads them through the same transforms as a CSV's columns.
The label is Bernoulli(sigmoid(teacher logit)): a fixed random function of the generated
values (first-order weights and rank-4 factorisation-machine interactions over hashed value
embeddings, plus numeric, vector and map terms), with a chosen base rate. Everything is
deterministic from the seed; the train and eval splits are different rows of the same world.

Column types (keys besides `type`):
  categorical  cardinality, zipf=1.1, prefix="c", missing=0, like="", parallel_to=""
  integer      cardinality, zipf=1.1, like="", parallel_to=""     (raw ints in [0, card))
  numeric      distribution="lognormal" | "normal", mu=0, sigma=1, integer=False
  tags         cardinality, max_len, min_len=0, zipf=1.1, prefix="t", weighted=False
  sequence     cardinality, max_len, min_len=0, zipf=1.1, prefix="i", like="", parallel_to=""
  map          keys_like (a categorical column), max_len, min_len=1, hit=0.5
  vector       dim
`like` draws values from another column's value space (same strings, same teacher
embeddings); `parallel_to` derives each value from the same-position value of another
column (a category per item), so `hist_cat` parallel to `hist_item` and `cat` parallel to
`item` agree whenever an item appears in both. List columns take `separator="|"`.
"""

import dataclasses
import functools
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recjax.errors import ConfigError

_KEYS = {
    "categorical": {"cardinality", "zipf", "prefix", "missing", "like", "parallel_to"},
    "integer": {"cardinality", "zipf", "like", "parallel_to"},
    "numeric": {"distribution", "mu", "sigma", "integer"},
    "tags": {"cardinality", "max_len", "min_len", "zipf", "prefix", "weighted", "separator"},
    "sequence": {"cardinality", "max_len", "min_len", "zipf", "prefix", "like", "parallel_to",
                 "separator"},
    "map": {"keys_like", "max_len", "min_len", "hit", "separator"},
    "vector": {"dim", "separator"},
}
_REQUIRED = {"categorical": {"cardinality"}, "integer": {"cardinality"},
             "tags": {"cardinality", "max_len"}, "sequence": {"cardinality", "max_len"},
             "map": {"keys_like", "max_len"}, "vector": {"dim"}}
_SPLITS = {"train": 0, "eval": 1, "calibration": 2}
_CALIBRATION_ROWS = 8192
_TEACHER_ROWS = 1 << 16     # teacher embeddings per value space (ids beyond wrap around)
_RANK = 4


@dataclasses.dataclass(frozen=True)
class Column:
  name: str
  type: str
  cardinality: int = 0
  zipf: float = 1.1
  prefix: str = ""
  missing: float = 0.0
  like: str = ""
  parallel_to: str = ""
  distribution: str = "lognormal"
  mu: float = 0.0
  sigma: float = 1.0
  integer: bool = False
  max_len: int = 0
  min_len: int = -1                 # -1: 0 for tags and sequences, 1 for maps
  weighted: bool = False
  separator: str = "|"
  keys_like: str = ""
  hit: float = 0.5
  dim: int = 0

  @property
  def multi(self) -> bool:
    return self.type in ("tags", "sequence", "map", "vector")


@dataclasses.dataclass(frozen=True)
class Schema:
  """`data.synthetic` validated: row counts, seed, teacher settings and the columns."""
  rows: int
  eval_rows: int
  seed: int
  columns: tuple[Column, ...]
  label: str = "label"
  base_rate: float = 0.25           # mean label
  signal: float = 2.0               # standard deviation of the teacher's logit

  def column(self, name: str) -> Column:
    return next(c for c in self.columns if c.name == name)


def criteo(cardinality_cap: int = 1_000_000) -> dict:
  """Criteo-like columns: I1..I13 integer counts, C1..C26 categorical with Criteo's
  cardinalities (capped)."""
  vocab = [1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593, 3194,
           27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105, 142572]
  columns = {f"I{i + 1}": dict(type="numeric", mu=0.5 + 0.4 * i, sigma=1.5, integer=True)
             for i in range(13)}
  columns.update({f"C{i + 1}": dict(type="categorical", cardinality=min(v, cardinality_cap),
                                    zipf=1.05 + 0.01 * i, prefix="c")
                  for i, v in enumerate(vocab)})
  return columns


CRITEO = criteo()

# A user's recent behaviour (items and their categories, most recent last) and the
# candidate item, with tags, a per-category click-rate map looked up by the candidate's
# category, a price and a pre-trained user vector.
SEQUENCE = {
    "user": dict(type="integer", cardinality=20000, zipf=0.8),
    "item": dict(type="categorical", cardinality=50000, like="hist_item"),
    "cat": dict(type="categorical", like="hist_cat", parallel_to="item"),
    "hist_item": dict(type="sequence", cardinality=50000, max_len=20, prefix="i"),
    "hist_cat": dict(type="sequence", cardinality=500, max_len=20, prefix="k",
                     parallel_to="hist_item"),
    "tags": dict(type="tags", cardinality=1000, max_len=5, weighted=True),
    "cat_ctr": dict(type="map", keys_like="cat", max_len=4, hit=0.6),
    "price": dict(type="numeric", mu=3.0, sigma=1.0),
    "user_vec": dict(type="vector", dim=8),
}

SCHEMAS = {"criteo": CRITEO, "sequence": SEQUENCE}


def _build_column(name: str, spec, key: str) -> Column:
  spec = dict(spec)
  kind = spec.pop("type", None)
  if kind not in _KEYS:
    raise ConfigError(f"{key}.type: {kind!r} is not a column type; valid: {', '.join(_KEYS)}")
  for field in spec:
    if field not in _KEYS[kind]:
      raise ConfigError(f"{key}.{field}: not a key of a {kind} column; valid: "
                        f"{', '.join(sorted(_KEYS[kind]))}")
  for field in _REQUIRED.get(kind, ()):
    if field not in spec and not (field == "cardinality" and spec.get("like")):
      raise ConfigError(f"{key}.{field}: required for a {kind} column")
  try:
    column = Column(name=name, type=kind, **spec)
  except TypeError as e:
    raise ConfigError(f"{key}: {e}") from None
  for field in ("cardinality", "max_len", "dim"):
    if field in spec and (not isinstance(spec[field], int) or spec[field] < 1):
      raise ConfigError(f"{key}.{field}: expected a positive integer, got {spec[field]!r}")
  for field in ("missing", "hit"):
    if not 0 <= getattr(column, field) <= 1:
      raise ConfigError(f"{key}.{field}: expected a share in [0, 1], got {getattr(column, field)!r}")
  if column.distribution not in ("lognormal", "normal"):
    raise ConfigError(f"{key}.distribution: {column.distribution!r} is not lognormal or normal")
  if column.min_len > column.max_len:
    raise ConfigError(f"{key}.min_len: {column.min_len} exceeds max_len {column.max_len}")
  return column


def schema(spec, key: str = "data.synthetic") -> Schema:
  """Validates a `data.synthetic` mapping (columns a dict, or the name of one in SCHEMAS)."""
  spec = dict(spec or {})
  columns = spec.pop("columns", None)
  if isinstance(columns, str):
    if columns not in SCHEMAS:
      raise ConfigError(f"{key}.columns: {columns!r} is not a ready-made schema; valid: "
                        f"{', '.join(SCHEMAS)}")
    columns = SCHEMAS[columns]
  if not columns:
    raise ConfigError(f"{key}.columns: required (a dict of columns or one of {', '.join(SCHEMAS)})")
  allowed = {f.name for f in dataclasses.fields(Schema)} - {"columns"}
  for field in spec:
    if field not in allowed:
      raise ConfigError(f"{key}.{field}: no such key; valid keys: columns, {', '.join(sorted(allowed))}")
  built = tuple(_build_column(name, c, f"{key}.columns.{name}") for name, c in dict(columns).items())
  names = {c.name for c in built}
  for column in built:
    for field in ("like", "parallel_to", "keys_like"):
      other = getattr(column, field)
      if other and other not in names:
        raise ConfigError(f"{key}.columns.{column.name}.{field}: no column {other!r}")
  try:
    result = Schema(columns=built, **{"rows": 0, "eval_rows": 0, "seed": 0, **spec})
  except TypeError as e:
    raise ConfigError(f"{key}: {e}") from None
  if result.label in names:
    raise ConfigError(f"{key}.label: {result.label!r} is also a column name")
  if not (0 < result.base_rate < 1 and result.signal >= 0 and result.rows >= 0
          and result.eval_rows >= 0):
    raise ConfigError(f"{key}: rows and eval_rows must be >= 0, base_rate in (0, 1), signal >= 0")
  _order(result)                  # rejects cycles of like / parallel_to / keys_like
  return result


def _order(s: Schema) -> list[Column]:
  """Columns with the columns they derive from first."""
  done, order = set(), []

  def visit(column, path):
    if column.name in done:
      return
    if column.name in path:
      raise ConfigError(f"data.synthetic.columns: {' -> '.join(path + (column.name,))} is a cycle")
    for other in (column.parallel_to, column.keys_like, column.like):
      if other:
        visit(s.column(other), path + (column.name,))
    done.add(column.name)
    order.append(column)

  for column in s.columns:
    visit(column, ())
  return order


def _space(s: Schema, column: Column) -> Column:
  """The column whose value space (strings, cardinality, teacher embeddings) `column` uses."""
  while column.like:
    column = s.column(column.like)
  return column


def _salt(*parts) -> int:
  return zlib.crc32("/".join(map(str, parts)).encode())


@functools.lru_cache(maxsize=64)
def _zipf_cdf(cardinality: int, a: float) -> np.ndarray:
  cdf = np.cumsum(np.arange(1, cardinality + 1, dtype=np.float64) ** -a)
  return cdf / cdf[-1]


def _zipf(rng, n: int, cardinality: int, a: float) -> np.ndarray:
  return np.minimum(np.searchsorted(_zipf_cdf(cardinality, a), rng.random(n), side="right"),
                    cardinality - 1)


def _derive(parent_ids: np.ndarray, salt: int, cardinality: int) -> np.ndarray:
  """A fixed function of a parent id (a SplitMix-style integer mix), so a child agrees
  wherever the parent's value appears."""
  x = parent_ids.astype(np.uint64) + np.uint64(salt)
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return ((x ^ (x >> np.uint64(31))) % np.uint64(cardinality)).astype(np.int64)


def _prefix(space: Column) -> str:
  return space.prefix or {"categorical": "c", "tags": "t", "sequence": "i"}.get(space.type, "")


def _strings(prefix: str, ids: np.ndarray) -> pa.Array:
  return pc.binary_join_element_wise(prefix, pa.array(ids).cast(pa.string()), "")


def _joined(offsets: np.ndarray, flat: pa.Array, separator: str) -> pa.Array:
  return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int64()), flat), separator)


def _lengths(rng, n: int, column: Column, default_min: int) -> np.ndarray:
  low = default_min if column.min_len < 0 else column.min_len
  return rng.integers(low, column.max_len + 1, n)


@dataclasses.dataclass
class _Generated:
  """One column's raw values and what the teacher sees of it."""
  values: pa.Array
  ids: np.ndarray | None = None         # flat value ids (categorical kinds)
  offsets: np.ndarray | None = None     # row offsets into ids (None: one id per row)
  weights: np.ndarray | None = None     # flat weights of ids
  dense: np.ndarray | None = None       # [N] or [N, dim] numeric signal for the teacher


def _generate_column(s: Schema, column: Column, n: int, rng, done: dict) -> _Generated:
  space = _space(s, column)
  cardinality = space.cardinality
  prefix = _prefix(space)
  if column.type in ("categorical", "integer"):
    if column.parallel_to:
      ids = _derive(done[column.parallel_to].ids, _salt(space.name), cardinality)
    else:
      ids = _zipf(rng, n, cardinality, column.zipf)
    if column.type == "integer":
      return _Generated(pa.array(ids), ids=ids, weights=np.ones(n))
    values = _strings(prefix, ids)
    present = rng.random(n) >= column.missing
    if column.missing:
      values = pc.if_else(pa.array(present), values, "")
    return _Generated(values, ids=ids, weights=present.astype(np.float64))
  if column.type in ("tags", "sequence"):
    if column.parallel_to:
      parent = done[column.parallel_to]
      offsets = parent.offsets
      ids = _derive(parent.ids, _salt(space.name), cardinality)
    else:
      offsets = np.concatenate([[0], np.cumsum(_lengths(rng, n, column, 0))])
      ids = _zipf(rng, int(offsets[-1]), cardinality, column.zipf)
    flat = _strings(prefix, ids)
    weights = np.ones(len(ids))
    if column.weighted:
      weights = np.round(rng.uniform(0.1, 1.0, len(ids)), 1)
      flat = pc.binary_join_element_wise(flat, pa.array(weights).cast(pa.string()), ":")
    return _Generated(_joined(offsets, flat, column.separator), ids=ids, offsets=offsets,
                      weights=weights)
  if column.type == "numeric":
    latent = rng.normal(column.mu, column.sigma, n)
    x = np.exp(latent) if column.distribution == "lognormal" else latent
    x = np.floor(x) if column.integer else np.round(x, 4)
    return _Generated(pa.array(x), dense=(latent - column.mu) / column.sigma)
  if column.type == "vector":
    x = np.round(rng.normal(0, 1, (n, column.dim)), 4)
    offsets = np.arange(n + 1) * column.dim
    return _Generated(_joined(offsets, pa.array(x.ravel()).cast(pa.string()), column.separator),
                      dense=x)
  # map: consecutive (so distinct) keys from the key column's space, starting at the row's
  # own key with probability `hit`; the teacher reads the value found at the row's key.
  key_column = s.column(column.keys_like)
  key_space = _space(s, key_column)
  own = done[column.keys_like].ids
  lengths = _lengths(rng, n, column, 1)
  hit = (rng.random(n) < column.hit) & (lengths > 0)
  anchor = np.where(hit, own, _zipf(rng, n, key_space.cardinality, key_column.zipf))
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  position = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
  keys = (np.repeat(anchor, lengths) + position) % key_space.cardinality
  values = np.round(rng.uniform(0, 1, len(keys)), 3)
  flat = pc.binary_join_element_wise(_strings(_prefix(key_space), keys),
                                     pa.array(values).cast(pa.string()), ":")
  found = np.zeros(n)
  found[hit] = values[offsets[:-1][hit]]
  return _Generated(_joined(offsets, flat, column.separator), dense=found - 0.5 * hit)


class _Teacher:
  """Fixed random parameters: per value space a first-order weight and a rank-4 factor per
  id (ids wrap around at 2^16), per numeric / map column a weight, per vector a direction."""

  def __init__(self, s: Schema):
    self.s = s
    self.tables = {}
    for column in s.columns:
      rng = np.random.default_rng([s.seed, _salt("teacher", column.name)])
      if column.type in ("categorical", "integer", "tags", "sequence") and not column.like:
        rows = min(column.cardinality, _TEACHER_ROWS)
        self.tables[column.name] = (rng.normal(0, 1, rows), rng.normal(0, 1, (rows, _RANK)))
      elif column.type in ("numeric", "map"):
        self.tables[column.name] = rng.normal(0, 1)
      elif column.type == "vector":
        self.tables[column.name] = rng.normal(0, 1, column.dim) / np.sqrt(column.dim)

  def terms(self, generated: dict, n: int):
    """First-order, interaction and dense parts of the raw logit, each [N]."""
    first, dense = np.zeros(n), np.zeros(n)
    pooled_sum, pooled_sq = np.zeros((n, _RANK)), np.zeros(n)
    for column in self.s.columns:
      g = generated[column.name]
      if g.ids is not None:
        w, v = self.tables[_space(self.s, column).name]
        rows = g.ids % len(w)
        if g.offsets is None:
          w_row, v_row = w[rows] * g.weights, v[rows] * g.weights[:, None]
        else:     # mean over the list's elements, weighted
          counts = np.maximum(np.diff(g.offsets), 1)[:, None]
          w_row = _segment_sum(w[rows] * g.weights, g.offsets) / counts[:, 0]
          v_row = _segment_sum(v[rows] * g.weights[:, None], g.offsets) / counts
        first += w_row
        pooled_sum += v_row
        pooled_sq += (v_row * v_row).sum(1)
      elif column.type == "vector":
        dense += g.dense @ self.tables[column.name]
      else:
        dense += self.tables[column.name] * g.dense
    interactions = 0.5 * ((pooled_sum * pooled_sum).sum(1) - pooled_sq)
    return first, interactions, dense


def _segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  cumulative = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, 0)])
  return cumulative[offsets[1:]] - cumulative[offsets[:-1]]


def _columns(s: Schema, split: str, n: int) -> dict[str, _Generated]:
  done = {}
  for column in _order(s):
    rng = np.random.default_rng([s.seed, _SPLITS[split], _salt(column.name)])
    done[column.name] = _generate_column(s, column, n, rng, done)
  return done


@functools.lru_cache(maxsize=8)
def _calibration(s: Schema):
  """Scales of the teacher's parts and the bias that gives `base_rate`, on a fixed sample."""
  teacher = _Teacher(s)
  parts = teacher.terms(_columns(s, "calibration", _CALIBRATION_ROWS), _CALIBRATION_ROWS)
  scales = [1 / p.std() if p.std() > 1e-9 else 0.0 for p in parts]
  raw = sum(p * c for p, c in zip(parts, scales))
  norm = s.signal / raw.std() if raw.std() > 1e-9 else 0.0
  low, high = -20.0, 20.0
  for _ in range(60):
    bias = (low + high) / 2
    if np.mean(1 / (1 + np.exp(-(raw * norm + bias)))) > s.base_rate:
      high = bias
    else:
      low = bias
  return teacher, scales, norm, (low + high) / 2


def teacher_logits(s: Schema, generated: dict, n: int) -> np.ndarray:
  teacher, scales, norm, bias = _calibration(s)
  parts = teacher.terms(generated, n)
  return sum(p * c for p, c in zip(parts, scales)) * norm + bias


def generate(s: Schema, split: str, with_logits: bool = False):
  """The raw columns and the label of `split` ("train": `rows`, "eval": `eval_rows`) as a
  pyarrow table; with `with_logits`, also the teacher's logits (its AUC is the ceiling)."""
  n = {"train": s.rows, "eval": s.eval_rows}[split]
  generated = _columns(s, split, n)
  logits = teacher_logits(s, generated, n)
  rng = np.random.default_rng([s.seed, _SPLITS[split], _salt(s.label)])
  labels = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(np.int64)
  table = pa.table({**{c.name: generated[c.name].values for c in s.columns}, s.label: labels})
  return (table, logits) if with_logits else table

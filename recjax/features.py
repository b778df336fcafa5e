"""Feature kinds, declared once, with a numpy transform for training and a TF twin for serving.

Both paths call the same hashing op (TensorFlow's FarmHash `to_hash_bucket_fast`) on whole
columns, so an id computed in the Grain pipeline is the id the SavedModel computes online.
Numeric transforms are float32 arithmetic written once for numpy and once for TF.

A transformed batch is `ids` and `weights`, {id feature: [N, L]} (L the feature's length,
padding has weight 0), and `dense` [N, D] holding every numeric feature in declaration order.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from recjax.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class IdFeature:
  """A column mapped to ids: strings by hashing or by a vocabulary (with OOV buckets), numbers
  by bucketising at sorted `boundaries` (id i: boundaries[i-1] <= x < boundaries[i])."""
  name: str
  column: str = ""
  hash_bucket_size: int = 0
  vocabulary: tuple[str, ...] = ()
  num_oov_buckets: int = 1
  boundaries: tuple[float, ...] = ()
  table: str = ""                   # features of a group naming the same table share it

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    if sum(map(bool, (self.hash_bucket_size, self.vocabulary, self.boundaries))) != 1:
      raise ValueError("set exactly one of hash_bucket_size, vocabulary and boundaries")
    if list(self.boundaries) != sorted(set(self.boundaries)):
      raise ValueError("boundaries must be strictly increasing")
    if self.hash_bucket_size < 0 or self.num_oov_buckets < 1:
      raise ValueError("hash_bucket_size must be positive and num_oov_buckets at least 1")
    if len(set(self.vocabulary)) != len(self.vocabulary):
      raise ValueError("vocabulary holds duplicates")

  @property
  def numeric(self) -> bool:
    """Whether the raw column is numeric (bucketised) rather than strings."""
    return bool(self.boundaries)

  @property
  def length(self) -> int:
    """Ids per row (L of the batch's [N, L] ids)."""
    return 1

  @property
  def num_ids(self) -> int:
    if self.boundaries:
      return len(self.boundaries) + 1
    return self.hash_bucket_size or len(self.vocabulary) + self.num_oov_buckets

  def ids(self, values: np.ndarray) -> np.ndarray:
    """numpy path: an object array of strings (or numbers, when bucketised) -> int32 ids."""
    if self.boundaries:     # compared in float32, as the TF twin does
      edges = np.asarray(self.boundaries, np.float32)
      return np.searchsorted(edges, values.astype(np.float32), side="right").astype(np.int32)
    if self.hash_bucket_size:
      return tf.strings.to_hash_bucket_fast(values, self.hash_bucket_size).numpy().astype(np.int32)
    # Python strings (object dtype), not numpy's fixed-width str, which drops trailing NULs.
    uniques, inverse = np.unique(values.astype(object), return_inverse=True)
    index = {v: i for i, v in enumerate(self.vocabulary)}
    unique_ids = np.array([index.get(u, -1) for u in uniques], np.int64)
    oov = unique_ids < 0
    if oov.any():
      unique_ids[oov] = len(self.vocabulary) + tf.strings.to_hash_bucket_fast(
          uniques[oov], self.num_oov_buckets).numpy()
    return unique_ids[inverse.reshape(-1)].astype(np.int32)

  def tf_table(self) -> tf.lookup.StaticHashTable | None:
    """The vocabulary as a TF table (None when hashing); built once, tracked by the export."""
    if not self.vocabulary:
      return None
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.vocabulary, tf.string),
            tf.range(len(self.vocabulary), dtype=tf.int64)),
        default_value=-1)

  def tf_ids(self, values: tf.Tensor, table=None) -> tf.Tensor:
    """TF twin of `ids`: a string tensor -> int32 ids (`table` from `tf_table`)."""
    if self.boundaries:
      return tf.cast(tf.raw_ops.Bucketize(input=tf.cast(values, tf.float32),
                                          boundaries=list(self.boundaries)), tf.int32)
    if self.hash_bucket_size:
      return tf.cast(tf.strings.to_hash_bucket_fast(values, self.hash_bucket_size), tf.int32)
    found = table.lookup(values)
    oov = len(self.vocabulary) + tf.strings.to_hash_bucket_fast(values, self.num_oov_buckets)
    return tf.cast(tf.where(found < 0, oov, found), tf.int32)


@dataclasses.dataclass(frozen=True)
class NumericFeature:
  """A numeric column, optionally log1p-compressed, then standardised: (x - mean) / std."""
  name: str
  column: str = ""
  log1p: bool = False
  mean: float = 0.0
  std: float = 1.0

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    if not self.std > 0:
      raise ValueError("std must be positive")

  def values(self, raw: np.ndarray) -> np.ndarray:
    x = raw.astype(np.float32)
    if self.log1p:
      x = np.log1p(x)
    return (x - np.float32(self.mean)) / np.float32(self.std)

  def tf_values(self, raw: tf.Tensor) -> tf.Tensor:
    x = tf.cast(raw, tf.float32)
    if self.log1p:
      x = tf.math.log1p(x)
    return (x - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)


Feature = IdFeature | NumericFeature
KINDS = {"id": IdFeature, "numeric": NumericFeature}


@dataclasses.dataclass(frozen=True)
class Group:
  """Id features that feed one part of a model, embedded with one dimension."""
  name: str
  features: tuple[str, ...]
  dim: int
  combiner: str = "sum"             # sum | mean | sqrtn (for multi-id features)
  init_scale: float = 0.05
  placement: str = "auto"           # auto (sharded from 2^17 rows) | replicated | sharded
  capacity_factor: float = 2.0      # all_to_all capacity: this x the even share of ids
  on_overflow: str = "fallback"     # fallback (correct slower path) | error

  def __post_init__(self):
    if self.dim < 1 or not self.features:
      raise ValueError("a group needs features and a positive dim")
    for field, allowed in (("combiner", ("sum", "mean", "sqrtn")),
                           ("placement", ("auto", "replicated", "sharded")),
                           ("on_overflow", ("fallback", "error"))):
      if getattr(self, field) not in allowed:
        raise ValueError(f"{field} {getattr(self, field)!r} is not one of {', '.join(allowed)}")
    if not self.capacity_factor > 0:
      raise ValueError("capacity_factor must be positive")


def build_feature(name: str, spec: dict, key: str, build: Callable) -> Feature:
  kind = spec.pop("kind", None)
  if kind not in KINDS:
    raise ConfigError(f"{key}.kind: {kind!r} is not a feature kind; valid kinds: {', '.join(KINDS)}")
  return build(KINDS[kind], spec, key, name=name)


def check_groups(features, groups) -> None:
  by_name = {f.name: f for f in features}
  for group in groups:
    for name in group.features:
      if name not in by_name:
        raise ConfigError(f"groups.{group.name}.features: {name!r} is not a declared feature; "
                          f"declared: {', '.join(sorted(by_name))}")
      if not isinstance(by_name[name], IdFeature):
        raise ConfigError(f"groups.{group.name}.features: {name!r} is numeric; groups embed id "
                          "features, numeric features feed the model's dense input")


def id_features(features) -> tuple[IdFeature, ...]:
  return tuple(f for f in features if isinstance(f, IdFeature))


def numeric_features(features) -> tuple[NumericFeature, ...]:
  return tuple(f for f in features if isinstance(f, NumericFeature))


def transform(features, columns: dict[str, np.ndarray],
              where: Callable[[int], str] = lambda row: f"row {row}") -> dict[str, np.ndarray]:
  """numpy path over whole columns: raw columns -> {'ids', 'weights', 'dense'}.

  `where(row)` names a row's origin (file and line) for the error on a non-finite value.
  """
  n = len(next(iter(columns.values())))
  ids = {f.name: f.ids(columns[f.column])[:, None] for f in id_features(features)}
  dense = [f.values(columns[f.column]) for f in numeric_features(features)]
  dense = np.stack(dense, 1) if dense else np.zeros((n, 0), np.float32)
  bad = ~np.isfinite(dense)
  if bad.any():
    row, col = np.argwhere(bad)[0]
    f = numeric_features(features)[col]
    raw = columns[f.column][row]
    raw = raw.item() if isinstance(raw, np.generic) else raw
    raise DataError(f"{where(row)}: column {f.column!r} holds {raw!r}, "
                    f"which feature {f.name!r} turns into {dense[row, col]}")
  weights = {name: np.ones(v.shape, np.float32) for name, v in ids.items()}
  return {"ids": ids, "weights": weights, "dense": dense}


class TfTransform(tf.Module):
  """TF twin of `transform`, used inside the exported SavedModel.

  A tf.Module so that the vocabulary tables it owns are tracked and saved with the model.
  """

  def __init__(self, features):
    super().__init__()
    self._ids = id_features(features)
    self._numeric = numeric_features(features)
    self.vocabularies = {f.name: f.tf_table() for f in self._ids if f.vocabulary}

  def __call__(self, columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    batch = tf.shape(next(iter(columns.values())))[0]
    ids = {f.name: f.tf_ids(columns[f.column], self.vocabularies.get(f.name))[:, None]
           for f in self._ids}
    dense = [f.tf_values(columns[f.column]) for f in self._numeric]
    dense = tf.stack(dense, 1) if dense else tf.zeros([batch, 0], tf.float32)
    weights = {name: tf.ones(tf.shape(v), tf.float32) for name, v in ids.items()}
    return {"ids": ids, "weights": weights, "dense": dense}

"""The id kind: one id per row, from a string column (hash or vocabulary) or from a numeric
column bucketised at `boundaries`."""

import dataclasses

import numpy as np
import tensorflow as tf

from recjax.features.kinds import protocol
from recjax.features.kinds import string_ids


@dataclasses.dataclass(frozen=True)
class IdFeature(protocol.StringIdKind):
  """A column mapped to ids: strings by hashing or by a vocabulary (a list, or a file read at
  config validation; with OOV buckets), numbers by bucketising at sorted `boundaries`
  (id i: boundaries[i-1] <= x < boundaries[i])."""
  name: str
  column: str = ""
  hash_bucket_size: int = 0
  vocabulary: tuple[str, ...] = ()
  vocabulary_file: str = ""
  num_oov_buckets: int = 1
  boundaries: tuple[float, ...] = ()
  table: str = ""                   # features of a group naming the same table share it

  output = "ids"

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    if self.boundaries:
      if self.hash_bucket_size or self.vocabulary or self.vocabulary_file:
        raise ValueError("set exactly one of hash_bucket_size, vocabulary and boundaries")
      if list(self.boundaries) != sorted(set(self.boundaries)):
        raise ValueError("boundaries must be strictly increasing")
    else:
      string_ids.resolve(self)

  @property
  def numeric(self) -> bool:
    """Whether the raw column is numeric (bucketised) rather than strings."""
    return bool(self.boundaries)

  @property
  def numeric_columns(self) -> tuple[str, ...]:
    return (self.column,) if self.numeric else ()

  @property
  def length(self) -> int:
    """Ids per row (L of the batch's [N, L] ids)."""
    return 1

  @property
  def num_ids(self) -> int:
    if self.boundaries:
      return len(self.boundaries) + 1
    return self.id_map.num_ids

  def ids(self, values: np.ndarray) -> np.ndarray:
    """numpy path: an object array of strings (or numbers, when bucketised) -> int32 ids."""
    if self.boundaries:     # compared in float32, as the TF twin does
      edges = np.asarray(self.boundaries, np.float32)
      return np.searchsorted(edges, values.astype(np.float32), side="right").astype(np.int32)
    return self.id_map.ids(values)

  def tf_table(self) -> tf.lookup.StaticHashTable | None:
    """The vocabulary as a TF table (None when hashing or bucketising)."""
    return None if self.boundaries else self.id_map.tf_table()

  def tf_ids(self, values: tf.Tensor, table=None) -> tf.Tensor:
    """TF twin of `ids`: a string (or float) tensor -> int32 ids (`table` from `tf_table`)."""
    if self.boundaries:
      return tf.cast(tf.raw_ops.Bucketize(input=tf.cast(values, tf.float32),
                                          boundaries=list(self.boundaries)), tf.int32)
    return self.id_map.tf_ids(values, table)

  def apply(self, columns: dict, problems) -> dict:
    ids = self.ids(columns[self.column])[:, None]
    return {"ids": ids, "weights": np.ones(ids.shape, np.float32)}

  def tf_apply(self, columns: dict, table=None) -> dict:
    ids = self.tf_ids(columns[self.column], table)[:, None]
    return {"ids": ids, "weights": tf.ones(tf.shape(ids), tf.float32)}

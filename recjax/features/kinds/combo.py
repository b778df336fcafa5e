"""The combo kind: the cross of two or more string columns, hashed into one id.

The columns' values are joined with an ASCII unit separator ("\\x1f", which data rarely
holds, so ("a_b", "c") and ("a", "b_c") stay apart) and hashed by TF's `to_hash_bucket_fast`:
in numpy the join is Python string concatenation over object arrays, in TF `strings.join`;
both give the same UTF-8 bytes (tested), hence the same id.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from recjax.features.kinds import protocol

JOIN = "\x1f"


@dataclasses.dataclass(frozen=True)
class ComboFeature(protocol.IdKind):
  """`inputs` are raw column names (a feature's column is its name unless it sets one)."""
  name: str
  inputs: tuple[str, ...] = ()
  hash_bucket_size: int = 0
  table: str = ""

  output = "ids"

  def __post_init__(self):
    if len(self.inputs) < 2:
      raise ValueError("inputs must name at least two columns")
    if len(set(self.inputs)) != len(self.inputs):
      raise ValueError("inputs repeat a column")
    if self.hash_bucket_size < 1:
      raise ValueError("hash_bucket_size must be positive")

  @property
  def columns(self) -> tuple[str, ...]:
    return self.inputs

  @property
  def num_ids(self) -> int:
    return self.hash_bucket_size

  def apply(self, columns: dict, problems) -> dict:
    key = np.asarray(columns[self.inputs[0]], object)
    for column in self.inputs[1:]:
      key = key + JOIN + np.asarray(columns[column], object)
    ids = tf.strings.to_hash_bucket_fast(key, self.hash_bucket_size).numpy().astype(np.int32)
    ids = ids[:, None]
    return {"ids": ids, "weights": np.ones(ids.shape, np.float32)}

  def tf_apply(self, columns: dict, table=None) -> dict:
    key = tf.strings.join([columns[c] for c in self.inputs], separator=JOIN)
    ids = tf.cast(tf.strings.to_hash_bucket_fast(key, self.hash_bucket_size), tf.int32)[:, None]
    return {"ids": ids, "weights": tf.ones(tf.shape(ids), tf.float32)}

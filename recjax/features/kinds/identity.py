"""The identity kind: integer ids written in a string column, used as they are.

The column is read as strings so that every way of writing a number ("7", "007", " 7 ",
"7.0", "1e3") reads the same in training and serving: both paths parse it with TF's
`to_number` as float64 (exact for every id a table can hold) and require an integer. Text
that is not an integer ("1.5", "a", "nan") is always a bad row; a missing value ("") and an id
outside [0, num_buckets) follow `out_of_range`: "error" names the row, "default" maps them to
the id `default`. The bad-row policy "skip" drops and counts the rows this parsing rejects
(`problems`), so the skip check and the feature cannot disagree.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from recjax.features.kinds import protocol
from recjax.features.kinds import strings


@dataclasses.dataclass(frozen=True)
class IdentityFeature(protocol.IdKind):
  name: str
  column: str = ""
  num_buckets: int = 0
  out_of_range: str = "error"       # error | default (also for missing values)
  default: int = 0
  table: str = ""

  output = "ids"

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    if self.num_buckets < 1:
      raise ValueError("num_buckets must be positive")
    if self.out_of_range not in ("error", "default"):
      raise ValueError(f"out_of_range {self.out_of_range!r} is not one of error, default")
    if not 0 <= self.default < self.num_buckets:
      raise ValueError(f"default {self.default} is not in [0, num_buckets={self.num_buckets})")

  @property
  def num_ids(self) -> int:
    return self.num_buckets

  def _message(self, values, what: str):
    return lambda row: (f"column {self.column!r} holds {strings.show(values[row])}, {what} "
                        f"(feature {self.name!r})")

  def apply(self, columns: dict, problems) -> dict:
    values = strings.as_bytes(columns[self.column])
    missing = values == b""
    x, unparsable = strings.np_to_number(np.where(missing, b"0", values), tf.float64)
    problems.report("not_a_number", unparsable, self._message(values, "which is not a number"))
    with np.errstate(invalid="ignore"):
      integral = np.isfinite(x) & (np.floor(x) == x)
    problems.report("id_out_of_range", ~integral & ~unparsable,
                    self._message(values, "which is not an integer id"))
    out_of_range = integral & ~missing & ((x < 0) | (x >= self.num_buckets))
    if self.out_of_range == "error":
      what = f"which is not an id in [0, num_buckets={self.num_buckets})"
      problems.report("id_out_of_range", out_of_range, self._message(values, what))
      problems.report("empty_value", missing, self._message(values, what))
    ids = np.where(missing | out_of_range | ~integral, self.default, x).astype(np.int32)[:, None]
    return {"ids": ids, "weights": np.ones(ids.shape, np.float32)}

  def tf_apply(self, columns: dict, table=None) -> dict:
    values = columns[self.column]
    missing = tf.equal(values, "")
    x = tf.strings.to_number(tf.where(missing, "0", values), tf.float64)
    checks = [strings.tf_check(tf.math.is_finite(x) & tf.equal(tf.floor(x), x),
                               f"column {self.column!r}: not an integer id", values)]
    invalid = missing | (x < 0) | (x >= self.num_buckets)
    if self.out_of_range == "error":
      checks.append(strings.tf_check(
          ~invalid, f"column {self.column!r}: not an id in [0, {self.num_buckets})", values))
    with tf.control_dependencies(checks):
      ids = tf.cast(tf.where(invalid, tf.constant(self.default, tf.float64), x), tf.int32)[:, None]
    return {"ids": ids, "weights": tf.ones(tf.shape(ids), tf.float32)}

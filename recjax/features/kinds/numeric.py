"""The raw numeric kind: a number (or `dim` numbers) per row, normalised into dense inputs.

Normalisers, in order: `log1p`, then min-max ((x - min) / (max - min), when `min` and `max` are
set) or z-score ((x - mean) / std). A served model must see the values it was trained on, bit
for bit, so the numpy path mirrors what TF's CPU kernels actually compute: log1p is TF's in
both (numpy's differs in the last bit on about 40% of inputs); the division is a
multiplication by the float32 reciprocal in both (TF's graph optimiser rewrites a division
by a constant into exactly that); subnormal inputs and results are flushed to zero as TF's
kernels do; and an identity step (shift 0, scale 1) is skipped in both.

`dim` > 1 reads a string column holding `dim` separator-joined numbers ("0.1|0.2|0.3",
parsed by TF's `to_number` in both paths) and feeds `dense` as `dim` columns.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from recjax.features.kinds import problems as problems_lib
from recjax.features.kinds import strings

TINY = np.finfo(np.float32).tiny


def check_normaliser(feature) -> None:
  """Validates log1p / min / max / mean / std of `feature`."""
  if (feature.min is None) != (feature.max is None):
    raise ValueError("set both min and max (min-max scaling) or neither")
  if feature.min is not None:
    if not feature.max > feature.min:
      raise ValueError("max must be greater than min")
    if (feature.mean, feature.std) != (0.0, 1.0):
      raise ValueError("set min/max (min-max scaling) or mean/std (z-score), not both")
  if not feature.std > 0:
    raise ValueError("std must be positive")


def _shift_scale(feature) -> tuple[float, np.float32]:
  """(shift, float32 reciprocal of the scale): x -> (x - shift) * reciprocal."""
  shift, scale = ((feature.min, feature.max - feature.min) if feature.min is not None
                  else (feature.mean, feature.std))
  return shift, np.float32(1) / np.float32(scale)


def _flush(x: np.ndarray) -> np.ndarray:
  """TF's CPU kernels run with flush-to-zero and denormals-are-zero; numpy does neither."""
  return np.where(np.abs(x) < TINY, np.copysign(np.float32(0), x), x)


def normalise(feature, x: np.ndarray) -> np.ndarray:
  """numpy path on float32 values: the TF twin's float32 ops, one by one."""
  if feature.log1p:
    x = tf.math.log1p(x).numpy()
  shift, reciprocal = _shift_scale(feature)
  if shift != 0:
    x = _flush(_flush(x) - np.float32(shift))
  if reciprocal != 1:
    x = _flush(_flush(x) * reciprocal)
  return x


def tf_normalise(feature, x: tf.Tensor) -> tf.Tensor:
  if feature.log1p:
    x = tf.math.log1p(x)
  shift, reciprocal = _shift_scale(feature)
  if shift != 0:
    x = x - tf.constant(shift, tf.float32)
  if reciprocal != 1:
    x = x * tf.constant(reciprocal, tf.float32)
  return x


@dataclasses.dataclass(frozen=True)
class NumericFeature:
  """A numeric column, optionally log1p-compressed, then min-max scaled or standardised."""
  name: str
  column: str = ""
  dim: int = 1
  separator: str = "|"              # between the numbers of a dim > 1 value
  log1p: bool = False
  mean: float = 0.0
  std: float = 1.0
  min: float | None = None
  max: float | None = None

  output = "dense"

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    if self.dim < 1:
      raise ValueError("dim must be positive")
    if not self.separator:
      raise ValueError("separator must not be empty")
    check_normaliser(self)

  @property
  def columns(self) -> tuple[str, ...]:
    return (self.column,)

  @property
  def numeric_columns(self) -> tuple[str, ...]:
    return (self.column,) if self.dim == 1 else ()

  def tf_table(self):
    return None

  def values(self, raw: np.ndarray) -> np.ndarray:
    """numpy path for dim 1: numbers -> float32 values [N]."""
    return normalise(self, raw.astype(np.float32))

  def tf_values(self, raw: tf.Tensor) -> tf.Tensor:
    return tf_normalise(self, tf.cast(raw, tf.float32))

  def apply(self, columns: dict, problems) -> dict:
    raw = columns[self.column]
    if self.dim == 1:
      return {"dense": self.values(raw)[:, None]}
    flat, splits = strings.np_split_list(raw, self.separator)
    counts = np.diff(splits)
    wrong = counts != self.dim
    problems.report("wrong_value_count", wrong, lambda row: (
        f"column {self.column!r} holds {strings.show(raw[row])}, {counts[row]} numbers where "
        f"feature {self.name!r} has dim {self.dim}"))
    x, bad = strings.np_to_number(flat, tf.float32)
    problems.report("not_a_number", problems_lib.rows_of(bad, splits), lambda row: (
        f"column {self.column!r} holds {strings.show(raw[row])}, whose "
        f"{strings.show(flat[problems_lib.first_in_row(bad, splits, row)])} is not a number"))
    x = normalise(self, x)
    if not wrong.any():
      return {"dense": x.reshape(-1, self.dim)}
    index = np.where(wrong[:, None], len(x), splits[:-1, None] + np.arange(self.dim))
    return {"dense": np.append(x, np.float32(0))[index]}     # rows of a wrong length: 0

  def tf_apply(self, columns: dict, table=None) -> dict:
    raw = columns[self.column]
    if self.dim == 1:
      return {"dense": self.tf_values(raw)[:, None]}
    rows = strings.split_list(raw, self.separator)
    check = strings.tf_check(tf.equal(rows.row_lengths(), self.dim),
                             f"column {self.column!r}: not {self.dim} numbers", raw)
    with tf.control_dependencies([check]):
      x = tf.strings.to_number(rows.flat_values, tf.float32)
    return {"dense": tf.reshape(tf_normalise(self, x), [-1, self.dim])}

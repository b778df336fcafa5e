"""The tag (multi-value) kind: a separator-joined list per row ("a|b|c"), optionally weighted
("a:0.5|b:2"), mapped to ids by hashing or a vocabulary and padded to `max_len`.

Padding has id 0 and weight 0, so pooling ignores it. Lists longer than `max_len` keep their
first `max_len` values. With `weighted`, a token's weight follows its last `weight_separator`
(a token without one weighs 1); a weight that is not a finite number makes the row bad
(`problems`). Splitting and number parsing are TF's string ops in both paths (`strings`).

`list_ids` / `tf_list_ids` are shared with the sequence kind.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from recjax.features.kinds import problems as problems_lib
from recjax.features.kinds import protocol
from recjax.features.kinds import string_ids
from recjax.features.kinds import strings


def check_list(feature) -> None:
  if feature.max_len < 1:
    raise ValueError("max_len must be positive")
  if not feature.separator:
    raise ValueError("separator must not be empty")


def list_ids(feature, raw: np.ndarray, problems, *, keep: str = "first",
             weighted: bool = False, weight_separator: str = ":") -> dict:
  """numpy path: a column of lists -> ids, weights [N, max_len] and the lists' lengths [N]."""
  flat, splits = strings.np_split_list(raw, feature.separator)
  weights = np.ones(len(flat), np.float32)
  if weighted:
    flat, text, paired = strings.np_split_pair(flat, weight_separator)

    def message(bad, what):
      def describe(row):
        index = problems_lib.first_in_row(bad, splits, row)
        return (f"column {feature.column!r} holds {strings.show(raw[row])}, whose weight "
                f"{strings.show(text[index])} {what} (feature {feature.name!r})")
      return describe

    weights, unparsable = strings.np_to_number(tf.where(paired, text, "1"), tf.float32)
    problems.report("not_a_number", problems_lib.rows_of(unparsable, splits),
                    message(unparsable, "is not a number"))
    infinite = ~np.isfinite(weights)
    problems.report("nan_or_inf", problems_lib.rows_of(infinite, splits),
                    message(infinite, "is not finite"))
  ids = feature.id_map.ids(flat)
  return {"ids": strings.np_pad(ids, splits, feature.max_len, keep, 0),
          "weights": strings.np_pad(weights, splits, feature.max_len, keep, 0.0),
          "lengths": np.diff(splits)}


def tf_list_ids(feature, raw: tf.Tensor, table, *, keep: str = "first", weighted: bool = False,
                weight_separator: str = ":") -> dict:
  """TF twin of `list_ids`."""
  rows = strings.split_list(raw, feature.separator)
  flat, checks = rows.flat_values, []
  weights = tf.ones(tf.shape(flat), tf.float32)
  if weighted:
    flat, text, paired = strings.split_pair(flat, weight_separator)
    weights = tf.strings.to_number(tf.where(paired, text, "1"), tf.float32)
    checks.append(strings.tf_check(tf.math.is_finite(weights),
                                   f"column {feature.column!r}: a weight is not finite", text))
  with tf.control_dependencies(checks):
    ids = feature.id_map.tf_ids(flat, table)
  return {"ids": strings.tf_pad(rows.with_flat_values(ids), feature.max_len, keep, 0),
          "weights": strings.tf_pad(rows.with_flat_values(weights), feature.max_len, keep, 0.0),
          "lengths": rows.row_lengths()}


@dataclasses.dataclass(frozen=True)
class TagFeature(protocol.StringIdKind):
  """A separator-joined list of values per row -> up to `max_len` weighted ids."""
  name: str
  column: str = ""
  max_len: int = 0
  separator: str = "|"
  weighted: bool = False            # "value:weight" tokens
  weight_separator: str = ":"
  hash_bucket_size: int = 0
  vocabulary: tuple[str, ...] = ()
  vocabulary_file: str = ""
  num_oov_buckets: int = 1
  table: str = ""

  output = "ids"

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    check_list(self)
    if self.weighted and not self.weight_separator:
      raise ValueError("weight_separator must not be empty")
    string_ids.resolve(self)

  @property
  def length(self) -> int:
    return self.max_len

  def apply(self, columns: dict, problems) -> dict:
    out = list_ids(self, columns[self.column], problems, weighted=self.weighted,
                   weight_separator=self.weight_separator)
    return {"ids": out["ids"], "weights": out["weights"]}

  def tf_apply(self, columns: dict, table=None) -> dict:
    out = tf_list_ids(self, columns[self.column], table, weighted=self.weighted,
                      weight_separator=self.weight_separator)
    return {"ids": out["ids"], "weights": out["weights"]}

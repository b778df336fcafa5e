"""The lookup kind: a value looked up in a map-valued column by the key in another column.

E.g. the user's clicks per category, "sports:3|news:12", looked up by the item's category
"news" -> 12. Entries are split at their last `kv_separator`; the first entry with the key
wins; an entry without a separator makes the row bad (`problems`). `result="value"` parses every
value of the map as a number (TF's `to_number`, so a malformed map fails even where its key is
not asked for) and yields one dense value, `default` where the key is absent, then normalised
like a numeric feature; `result="id"` maps the value string to an id by hashing or a
vocabulary (an absent key reads as the empty string).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from recjax.features.kinds import numeric
from recjax.features.kinds import problems as problems_lib
from recjax.features.kinds import protocol
from recjax.features.kinds import string_ids
from recjax.features.kinds import strings


@dataclasses.dataclass(frozen=True)
class LookupFeature(protocol.StringIdKind):
  name: str
  map_column: str = ""
  key_column: str = ""
  result: str = "value"             # value (one dense column) | id
  separator: str = "|"
  kv_separator: str = ":"
  default: float = 0.0              # the raw value of an absent key (result "value")
  log1p: bool = False
  mean: float = 0.0
  std: float = 1.0
  min: float | None = None
  max: float | None = None
  hash_bucket_size: int = 0         # result "id": hashing or a vocabulary
  vocabulary: tuple[str, ...] = ()
  vocabulary_file: str = ""
  num_oov_buckets: int = 1
  table: str = ""

  def __post_init__(self):
    if not self.map_column or not self.key_column:
      raise ValueError("set map_column and key_column")
    if not self.separator or not self.kv_separator:
      raise ValueError("separator and kv_separator must not be empty")
    if self.result == "value":
      numeric.check_normaliser(self)
      if self.hash_bucket_size or self.vocabulary or self.vocabulary_file:
        raise ValueError('hash_bucket_size and vocabulary are for result "id"')
    elif self.result == "id":
      string_ids.resolve(self)
    else:
      raise ValueError(f"result {self.result!r} is not one of value, id")

  @property
  def output(self) -> str:
    return "ids" if self.result == "id" else "dense"

  @property
  def columns(self) -> tuple[str, ...]:
    return (self.map_column, self.key_column)

  @property
  def dim(self) -> int:
    return 1

  def tf_table(self):
    return self.id_map.tf_table() if self.output == "ids" else None

  def apply(self, columns: dict, problems) -> dict:
    maps, keys = columns[self.map_column], columns[self.key_column]
    flat, splits = strings.np_split_list(maps, self.separator)
    entry_keys, values, paired = strings.np_split_pair(flat, self.kv_separator)
    row_of = np.repeat(np.arange(len(maps)), np.diff(splits))

    def message(bad, what):
      def describe(row):
        index = problems_lib.first_in_row(bad, splits, row)
        return (f"column {self.map_column!r} holds {strings.show(maps[row])}, whose entry "
                f"{strings.show(flat[index])} {what} (feature {self.name!r})")
      return describe

    problems.report("bad_map_entry", problems_lib.rows_of(~paired, splits),
                    message(~paired, f"has no {self.kv_separator!r}"))
    match = np.flatnonzero(tf.equal(entry_keys, tf.gather(
        tf.convert_to_tensor(keys, tf.string), row_of)).numpy())
    rows, first = np.unique(row_of[match], return_index=True)
    index = np.full(len(maps), len(paired))         # one past the entries: absent
    index[rows] = match[first]
    if self.output == "ids":
      ids = self.id_map.ids(tf.gather(tf.concat([values, [""]], 0), index))[:, None]
      return {"ids": ids, "weights": np.ones(ids.shape, np.float32)}
    x, bad = strings.np_to_number(values, tf.float32)
    problems.report("not_a_number", problems_lib.rows_of(bad & paired, splits),
                    message(bad & paired, "holds no number"))
    x = np.append(x, np.float32(self.default))[index]
    return {"dense": numeric.normalise(self, x)[:, None]}

  def tf_apply(self, columns: dict, table=None) -> dict:
    maps, keys = columns[self.map_column], columns[self.key_column]
    rows = strings.split_list(maps, self.separator)
    entry_keys, values, paired = strings.split_pair(rows.flat_values, self.kv_separator)
    check = strings.tf_check(paired, f"column {self.map_column!r}: an entry has no "
                             f"{self.kv_separator!r}", rows.flat_values)
    row_of = rows.value_rowids()
    count = tf.shape(entry_keys, out_type=tf.int64)[0]
    match = tf.equal(entry_keys, tf.gather(keys, row_of))
    positions = tf.where(match, tf.range(count), count)
    index = tf.minimum(tf.math.unsorted_segment_min(positions, row_of, tf.shape(maps)[0]), count)
    with tf.control_dependencies([check]):
      if self.output == "ids":
        found = tf.gather(tf.concat([values, [""]], 0), index)
        ids = self.id_map.tf_ids(found, table)[:, None]
        return {"ids": ids, "weights": tf.ones(tf.shape(ids), tf.float32)}
      x = tf.strings.to_number(values, tf.float32)
    x = tf.gather(tf.concat([x, [self.default]], 0), index)
    return {"dense": numeric.tf_normalise(self, x)[:, None]}

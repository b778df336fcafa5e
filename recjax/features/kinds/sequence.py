"""The sequence kind: a behaviour list per row ("i1|i2|i3", most recent last) -> `max_len` ids.

Longer lists keep their most recent `max_len` elements (`keep="last"`) or the oldest
(`keep="first"`), in their order; padding follows with id 0 and weight 0, so the weights are
the mask. Per-element sub-features are parallel columns: `hist_cat` names
`aligned_with="hist_item"`, and a row whose two lists differ in length is an error naming it.
`table="item_id"` embeds the elements with `item_id`'s table (same group, same `num_ids`).
"""

import dataclasses

from recjax.features.kinds import protocol
from recjax.features.kinds import string_ids
from recjax.features.kinds import tags


@dataclasses.dataclass(frozen=True)
class SequenceFeature(protocol.StringIdKind):
  name: str
  column: str = ""
  max_len: int = 0
  keep: str = "last"                # last (most recent) | first
  separator: str = "|"
  hash_bucket_size: int = 0
  vocabulary: tuple[str, ...] = ()
  vocabulary_file: str = ""
  num_oov_buckets: int = 1
  aligned_with: str = ""            # a sequence feature whose lists are parallel to these
  table: str = ""

  output = "ids"

  def __post_init__(self):
    object.__setattr__(self, "column", self.column or self.name)
    tags.check_list(self)
    if self.keep not in ("last", "first"):
      raise ValueError(f"keep {self.keep!r} is not one of last, first")
    if self.aligned_with == self.name:
      raise ValueError("aligned_with names the feature itself")
    string_ids.resolve(self)

  @property
  def length(self) -> int:
    return self.max_len

  def apply(self, columns: dict, problems) -> dict:
    """ids, weights [N, max_len] and `lengths` [N], the untruncated list lengths that
    `features.transform` compares between aligned sequences."""
    return tags.list_ids(self, columns[self.column], problems, keep=self.keep)

  def tf_apply(self, columns: dict, table=None) -> dict:
    return tags.tf_list_ids(self, columns[self.column], table, keep=self.keep)

"""The feature-kind protocol's common answers, written once; each kind overrides what differs.

Most kinds read one string column and yield one id per row; those that map strings to ids
through a `string_ids.StringIds` (id, tag, sequence, lookup) also take their id count and TF
table from it. Plain classes, not dataclasses: a kind stays a frozen dataclass of its own
fields and only inherits these properties.
"""

import functools

from recjax.features.kinds import string_ids


class IdKind:
  """One raw column, read as strings; one id per row; no TF table."""

  @property
  def columns(self) -> tuple[str, ...]:
    return (self.column,)

  @property
  def numeric_columns(self) -> tuple[str, ...]:
    return ()

  @property
  def length(self) -> int:
    """Ids per row (L of the batch's [N, L] ids)."""
    return 1

  def tf_table(self):
    return None


class StringIdKind(IdKind):
  """An `IdKind` whose ids come from hashing or a vocabulary (`id_map`)."""

  @functools.cached_property
  def id_map(self) -> string_ids.StringIds:
    return string_ids.StringIds.of(self)

  @property
  def num_ids(self) -> int:
    return self.id_map.num_ids

  def tf_table(self):
    return self.id_map.tf_table()

"""The bad-row policy: stop at the first bad row, or count and skip up to a maximum share.

`data.bad_rows = "error"` (the default) raises `DataError` naming the file and line of the
first bad row found. `"skip"` drops bad rows and counts them by reason; when the share of bad
rows in a split exceeds `data.max_bad_fraction`, the run stops with an error naming the count
and the first bad row. The counts go into the run summary, so nothing is dropped silently.

Reasons: wrong_field_count, not_a_number, empty_value (a number or id that is missing),
nan_or_inf, id_out_of_range (not an integer in an identity feature's [0, `num_buckets`)),
bad_label, and those a feature transform reports (`feature_kinds.problems`: a dim > 1 value of
wrong_value_count, a lookup map's bad_map_entry, a misaligned_sequence). The transforms' own
parsing decides, so a row is bad under "skip" exactly when it would stop the run under
"error". A missing column is never a row's fault and is always an error.
"""

import collections
import dataclasses

import numpy as np

from recjax.input import readers
from recjax.errors import DataError


def _problem(reason, mask, message):
  return [readers.Problem(reason, mask, message)] if mask.any() else []


def non_finite(columns: dict, numeric) -> list:
  """Numbers that read as NaN or infinity (written so, not left empty or unparsable)."""
  problems = []
  for name in numeric:
    values = columns[name]
    mask = np.isinf(values) | np.isnan(values)
    problems += _problem("nan_or_inf", mask, lambda row, name=name, values=values: (
        f"column {name!r} holds {values[row]}, which is not a finite number"))
  return problems


@dataclasses.dataclass
class Tally:
  """The bad rows of one split: counts by reason and the first one, over its sources."""
  policy: str                       # error | skip
  max_fraction: float
  rows: int = 0                     # rows read, bad ones included
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  first: str = ""

  def keep(self, read: readers.Read, problems: list) -> np.ndarray:
    """Counts the rows of `read` and those its parser left out, then `mark`s `problems`."""
    self.rows += read.rows
    for reason, (count, first) in read.dropped.items():
      self.rows += count
      self.counts[reason] += count
      self.first = self.first or first()
    return self.mark(problems, read.where, read.rows)

  def mark(self, problems: list, where, rows: int) -> np.ndarray:
    """Raises at the first bad row (policy error), or counts them (a row once, under its
    first reason) and returns the mask of the `rows` to keep."""
    bad = np.zeros(rows, bool)
    for problem in problems:
      row = int(np.argmax(problem.mask))
      if self.policy == "error":
        raise DataError(f"{where(row)}: {problem.message(row)}")
      new = int((problem.mask & ~bad).sum())
      if new:
        self.counts[problem.reason] += new
      bad |= problem.mask
      self.first = self.first or f"{where(row)}: {problem.message(row)}"
    return ~bad

  def merge(self, other: "Tally") -> None:
    """Adds the tally of a later part of the split (another file or block)."""
    self.rows += other.rows
    self.counts.update(other.counts)
    self.first = self.first or other.first

  def check(self, key: str) -> None:
    """Stops the run when the share of bad rows exceeds the maximum."""
    bad = sum(self.counts.values())
    if bad > self.max_fraction * self.rows:
      reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
      raise DataError(f"{key}: {bad} of {self.rows} rows are bad ({reasons}), more than "
                      f"data.max_bad_fraction={self.max_fraction:g}; the first: {self.first}")

  @property
  def summary(self) -> dict:
    return dict(sorted(self.counts.items()))

"""The bad-row policy: stop at the first bad row, or count and skip up to a maximum share.

`data.bad_rows = "error"` (the default) raises `DataError` naming the file and line of the
first bad row found. `"skip"` drops bad rows and counts them by reason; when the share of bad
rows in a split exceeds `data.max_bad_fraction`, the run stops with an error naming the count
and the first bad row. The counts go into the run summary, so nothing is dropped silently.

Reasons: wrong_field_count, not_a_number, empty_value (a number or id that is missing),
nan_or_inf, id_out_of_range (an identity feature's `num_buckets`), bad_label. A missing column
is never a row's fault and is always an error.
"""

import collections
import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recjax import readers
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


def identity_ids(features, columns: dict) -> list:
  """Ids of identity features (those with `num_buckets` that raise on a bad id) that are not
  integers in [0, num_buckets): found here so that `skip` can drop the rows."""
  problems = []
  for f in features:
    if not getattr(f, "num_buckets", 0) or getattr(f, "out_of_range", "error") != "error":
      continue
    raw = columns[f.column]
    text = pc.utf8_trim_whitespace(pa.array(raw, pa.string()))
    valid = pc.match_substring_regex(text, f"^{readers._NUMBER}$", ignore_case=True)
    x = pc.if_else(valid, text, None).cast(pa.float64()).fill_null(np.nan).to_numpy()
    empty = pc.equal(text, "").to_numpy(zero_copy_only=False)
    problems += _problem("empty_value", empty, lambda row, f=f: (
        f"column {f.column!r} is empty (feature {f.name!r})"))
    bad = ~empty & ~((x >= 0) & (x < f.num_buckets) & (np.floor(x) == x))
    problems += _problem("id_out_of_range", bad, lambda row, f=f, raw=raw: (
        f"column {f.column!r} holds {readers.show(raw[row])}, which is not an id in "
        f"[0, num_buckets={f.num_buckets}) (feature {f.name!r})"))
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
    """Raises at the first bad row (policy error), or counts them (a row once, under its
    first reason) and returns the mask of rows to keep."""
    self.rows += read.rows
    for reason, (count, first) in read.dropped.items():
      self.rows += count
      self.counts[reason] += count
      self.first = self.first or first()
    bad = np.zeros(read.rows, bool)
    for problem in problems:
      row = int(np.argmax(problem.mask))
      if self.policy == "error":
        raise DataError(f"{read.where(row)}: {problem.message(row)}")
      new = int((problem.mask & ~bad).sum())
      if new:
        self.counts[problem.reason] += new
      bad |= problem.mask
      self.first = self.first or f"{read.where(row)}: {problem.message(row)}"
    return ~bad

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

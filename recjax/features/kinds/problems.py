"""Bad rows found while reading or transforming columns: raised at once, or collected as masks.

A transform runs over whole columns. A value it cannot turn into ids or numbers (text that is
not a number, an identity id out of range, a list of the wrong length) is reported as a mask
of the rows at fault with a message, and the transform carries on with a placeholder in those
rows. Under the bad-row policy "error" the first report raises a `DataError` naming the row
(`where(row)`: its file and line); under "skip" the reports are kept and input drops and
counts the rows (`recjax.input.bad_rows`). So good data pays one vectorised pass either way, and the
check that calls a row bad is the transform's own parsing, not a second copy of it.
"""

import dataclasses
from typing import Callable

import numpy as np

from recjax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Problem:
  """Rows of one source that are bad for one reason; `message(row)` describes one of them."""
  reason: str
  mask: np.ndarray
  message: Callable[[int], str]


class Problems:
  """Where transforms report bad rows: `collect=False` raises at the first report."""

  def __init__(self, where: Callable[[int], str] = lambda row: f"row {row}",
               collect: bool = False):
    self.where, self.collect, self.found = where, collect, []

  def report(self, reason: str, mask: np.ndarray, message: Callable[[int], str]) -> None:
    if not mask.any():
      return
    if not self.collect:
      row = int(np.argmax(mask))
      raise DataError(f"{self.where(row)}: {message(row)}")
    self.found.append(Problem(reason, mask, message))


def rows_of(bad: np.ndarray, splits: np.ndarray) -> np.ndarray:
  """Elements of a flat array (row_splits `splits`) -> the mask of rows holding a bad one."""
  rows = np.zeros(len(splits) - 1, bool)
  rows[np.searchsorted(splits, np.flatnonzero(bad), side="right") - 1] = True
  return rows


def first_in_row(bad: np.ndarray, splits: np.ndarray, row: int) -> int:
  """The index of the first bad element of `row`."""
  return int(splits[row] + np.argmax(bad[splits[row]:splits[row + 1]]))

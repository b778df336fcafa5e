"""Task labels on the host: parsed per task, with the rows they make bad and the loss weights.

Input parses labels, not the tasks package, so that a missing label can mask one task of a
row (multi-task data often has labels only for some tasks) while a malformed one is a bad
row under the same policy as a bad feature value. The task specs (`recjax.tasks.spec.TaskSpec`)
arrive as arguments: this module reads their fields (`label`, `positive`, `missing`, `kind`,
`upsample_*`) and imports nothing above input.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recjax.features.kinds.problems import Problem
from recjax.input import readers


def _parse_numbers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """String cells -> (float64 values, empty mask, unparsable mask)."""
  text = pc.utf8_trim_whitespace(pa.array(values, pa.string()))
  valid = readers.number_mask(text).to_numpy(zero_copy_only=False)
  empty = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
  numbers = pc.if_else(pa.array(valid), text, None).cast(pa.float64()).fill_null(
      np.nan).to_numpy()
  return numbers, empty | (valid & np.isnan(numbers)), ~valid & ~empty


def labels(task, columns: dict) -> tuple[np.ndarray, np.ndarray, list]:
  """(label [N] float32, mask [N] float32: 0 where missing and masked, bad-row problems)."""
  if not task.label:
    n = len(next(iter(columns.values())))
    return np.zeros(n, np.float32), np.ones(n, np.float32), []
  raw = columns[task.label]
  problems = []
  if task.kind.retrieval:
    return log_q(raw), np.ones(len(raw), np.float32), []
  if task.positive:
    values = np.isin(raw, task.positive).astype(np.float64)
    missing = (raw == "") if task.missing == "mask" else np.zeros(len(raw), bool)
  elif task.numeric_label:       # read as numbers; NaN/inf are the reader's bad rows
    values, missing = raw, np.zeros(len(raw), bool)
  else:
    values, missing, unparsable = _parse_numbers(raw)
    if unparsable.any():
      problems.append(Problem("bad_label", unparsable, lambda row: (
          f"label {task.label!r} of task {task.name!r} is {readers.show(raw[row])}, which is "
          "not a number")))
    infinite = np.isinf(values)
    if infinite.any():
      problems.append(Problem("nan_or_inf", infinite, lambda row: (
          f"label {task.label!r} of task {task.name!r} is {raw[row]}, which is not finite")))
  if task.kind.binary:
    bad = ~missing & np.isfinite(values) & (values != 0) & (values != 1)
    if bad.any():
      problems.append(Problem("bad_label", bad, lambda row: (
          f"label {task.label!r} is {readers.show(raw[row])}; task {task.name!r} is binary: "
          "numeric labels must be 0 or 1 (or set positive for string labels)")))
  values = np.where(missing | ~np.isfinite(values), 0.0, values)
  return values.astype(np.float32), (~missing).astype(np.float32), problems


def log_q(items: np.ndarray) -> np.ndarray:
  """log of each row's item frequency among these rows: the sampling probability of the
  item as an in-batch negative (up to a constant that the softmax ignores), for the log-Q
  correction. Counted per source file (one train file: the whole split's frequencies; daily
  files: the day's, as Yi et al. estimate it from the recent stream)."""
  _, inverse, counts = np.unique(np.asarray(items).astype(str), return_inverse=True,
                                 return_counts=True)
  return np.log(counts[inverse] / len(items)).astype(np.float32)


def loss_weights(task, label: np.ndarray, mask: np.ndarray, columns: dict,
                 sample_weight: np.ndarray | None) -> np.ndarray:
  """Per-row loss weights: the missing-label mask x the sample weight x the upsampling
  rule (positive rows whose `upsample_column` exceeds `upsample_above` count k times)."""
  weights = mask.astype(np.float64)
  if sample_weight is not None:
    weights = weights * sample_weight
  if task.upsample_column:
    rule = (label > 0.5) & (np.asarray(columns[task.upsample_column], np.float64)
                            > task.upsample_above)
    weights = np.where(rule, weights * task.upsample_factor, weights)
  return weights.astype(np.float32)


def group_codes(values: np.ndarray) -> np.ndarray:
  """Dense int64 codes of a grouping column's values (equal values, equal codes)."""
  return np.unique(np.asarray(values).astype(str), return_inverse=True)[1].astype(np.int64)

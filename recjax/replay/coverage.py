"""`recjax replay coverage`: is every feature still served as it was trained?

Per raw column of the serving signature and per window of `coverage_window_s` (by the time
rows were served), the share of rows where the value was present, defaulted (the log's
`defaulted` list: a missing entity, a missing context value, a store that was down) or empty
(present but "" or NaN), and the population stability index (PSI) of the window's values
against the training data's: numbers in the training data's equal-frequency buckets, strings
by the training data's most frequent values plus "other".

A window alarms for a column when its present share falls below `min_present` x the
column's present share in the training data (a column that is often empty in training is
held to that), or its PSI exceeds `max_psi` in a window of at least PSI_MIN_EVENTS requests
(a user's columns take one value per request: fewer requests are too few to judge by).
`run` prints each alarm naming the column and window and returns them; the command exits
with ALARM_STATUS when there is one, so a scheduler can act on it. `plot` draws the present share of every column over time, the
alarmed ones in red, as a PNG.
"""

import dataclasses
import json

import numpy as np
import pyarrow as pa

from recjax.export import saved_model
from recjax.replay import verify

ALARM_STATUS = 3
TOP = 20
BUCKETS = 10
REFERENCE_ROWS = 200_000
PSI_MIN_EVENTS = 100


@dataclasses.dataclass(frozen=True)
class Reference:
  """A column's training distribution: its bins (edges, or top values) and their shares."""
  numeric: bool
  edges: np.ndarray | None
  values: tuple
  shares: np.ndarray
  present: float


def _empty(values: np.ndarray, numeric: bool) -> np.ndarray:
  if numeric:
    return ~np.isfinite(values.astype(np.float64))
  return np.asarray([v is None or v == "" for v in values])


def _histogram(values: np.ndarray, ref: Reference) -> np.ndarray:
  """The shares of `values` (present ones) over the reference's bins, each bin given half a
  row more (additive smoothing: a bin a small window happens to miss is not infinitely far)."""
  if len(values) == 0:
    return np.full(len(ref.shares), 1 / len(ref.shares))
  if ref.numeric:
    counts = np.bincount(np.searchsorted(ref.edges, values.astype(np.float64), side="right"),
                         minlength=len(ref.edges) + 1)
  else:
    index = {v: i for i, v in enumerate(ref.values)}
    counts = np.bincount([index.get(v, len(ref.values)) for v in values],
                         minlength=len(ref.values) + 1)
  counts = counts + 0.5
  return counts / counts.sum()


def psi(shares: np.ndarray, reference: np.ndarray) -> float:
  """The population stability index: sum of (p - q) ln(p / q) over the bins."""
  return float(np.sum((shares - reference) * np.log(shares / reference)))


def reference(experiment, columns) -> dict[str, Reference]:
  """The training data's distribution of each column (about REFERENCE_ROWS rows of it)."""
  from recjax.input import pipeline as input_lib
  from recjax.input import readers
  numeric = {c for f in experiment.features for c in f.numeric_columns}
  files = input_lib.resolve_files(experiment.data.train, "data.train")
  parts = [readers.read(path, experiment.data, list(columns), numeric).columns
           for path in files]
  out = {}
  for column in columns:
    values = np.concatenate([p[column] for p in parts])
    values = values[::max(1, len(values) // REFERENCE_ROWS)]    # spread over the whole span
    is_numeric = column in numeric
    empty = _empty(values, is_numeric)
    present = values[~empty]
    if is_numeric:       # as served: float32 (a value at a bucket edge stays on its side)
      present = present.astype(np.float32).astype(np.float64)
      edges = np.unique(np.quantile(present.astype(np.float64),
                                    np.linspace(0, 1, BUCKETS + 1)[1:-1])) if len(present) else (
          np.zeros(0))
      ref = Reference(True, edges, (), np.zeros(len(edges) + 1), 1 - empty.mean())
    else:
      strings = np.asarray([str(v) for v in present], object)
      unique, counts = np.unique(strings, return_counts=True)
      top = tuple(unique[np.argsort(-counts, kind="stable")[:TOP]])
      ref = Reference(False, None, top, np.zeros(len(top) + 1), 1 - empty.mean())
    out[column] = dataclasses.replace(ref, shares=_histogram(
        present.astype(np.float64) if is_numeric else np.asarray(
            [str(v) for v in present], object), ref))
  return out


def compute(experiment, replay_dir) -> dict:
  """{windows: [{start_ms, rows, columns: {column: {present, defaulted, empty, psi}}}],
  alarms: [...]}"""
  spec = experiment.serving.replay
  log = verify.read_log(replay_dir)
  specs = saved_model.serving_inputs(experiment)
  columns = sorted(specs)
  refs = reference(experiment, columns)
  window_ms = int(spec.coverage_window_s * 1000)
  start = log["served_at_ms"].to_numpy() // window_ms * window_ms
  defaulted = {c: np.zeros(log.num_rows, bool) for c in columns}   # row masks, one pass
  for row, names in enumerate(log["defaulted"].to_pylist()):
    for column in names:
      if column in defaulted:
        defaulted[column][row] = True
  windows, alarms = [], []
  for begin in np.unique(start):
    where = np.flatnonzero(start == begin)
    rows = log.take(pa.array(where))
    n = len(where)
    events = len(set(rows["event_id"].to_pylist()))
    out = {}
    for column in columns:
      numeric = specs[column].dtype.name == "float32"
      values = rows[column].to_numpy(zero_copy_only=False)
      was_defaulted = defaulted[column][where]
      empty = _empty(values, numeric) & ~was_defaulted
      present = ~was_defaulted & ~empty
      ref = refs[column]
      kept = values[present]
      shares = _histogram(kept.astype(np.float64) if numeric else kept, ref)
      stats = {"present": float(present.mean()), "defaulted": float(was_defaulted.mean()),
               "empty": float(empty.mean()),
               "psi": psi(shares, ref.shares) if present.any() else None}
      out[column] = stats
      floor = spec.min_present_of(column) * ref.present
      if stats["present"] < floor:
        alarms.append({"column": column, "window_start_ms": int(begin), "rows": n,
                       "reason": f"present in {stats['present']:.1%} of rows; the floor is "
                                 f"{floor:.1%} ({spec.min_present_of(column):g} x "
                                 f"{ref.present:.1%} in training)"})
      elif stats["psi"] is not None and stats["psi"] > spec.max_psi and events >= PSI_MIN_EVENTS:
        alarms.append({"column": column, "window_start_ms": int(begin), "rows": n,
                       "reason": f"PSI {stats['psi']:.3f} against the training data is over "
                                 f"{spec.max_psi:g}"})
    windows.append({"start_ms": int(begin), "rows": n, "events": events, "columns": out})
  return {"rows": log.num_rows, "window_s": spec.coverage_window_s, "windows": windows,
          "alarms": alarms,
          "training_present": {c: r.present for c, r in refs.items()}}


def plot(report: dict, path) -> None:
  """The present share of every column per window; alarmed columns in red, named."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  alarmed = {a["column"] for a in report["alarms"]}
  starts = [(w["start_ms"] - report["windows"][0]["start_ms"]) / 1000 for w in report["windows"]]
  figure, axis = plt.subplots(figsize=(10, 5), dpi=100)
  for column in report["training_present"]:
    shares = [w["columns"][column]["present"] for w in report["windows"]]
    bad = column in alarmed
    axis.plot(starts, shares, color="tab:red" if bad else "tab:gray",
              linewidth=2.5 if bad else 0.8, alpha=1.0 if bad else 0.5,
              label=column if bad else None, marker="o" if len(starts) < 30 else None)
  axis.set_ylim(-0.02, 1.05)
  axis.set_xlabel("seconds since the first window")
  axis.set_ylabel("share of rows with the feature present")
  title = (f"{len(alarmed)} feature(s) alarmed: {', '.join(sorted(alarmed))}" if alarmed
           else f"all {len(report['training_present'])} features covered")
  axis.set_title(f"replay coverage, {report['rows']:,} rows - {title}")
  if alarmed:
    axis.legend(loc="lower left")
  axis.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path)
  plt.close(figure)


def run(experiment, replay_dir, output=None, plot_path=None) -> dict:
  """Prints the alarms, writes the report and the plot; the summary for the command line."""
  report = compute(experiment, replay_dir)
  for alarm in report["alarms"]:
    print(f"recjax: alarm: {alarm['column']}: window at {alarm['window_start_ms']} ms: "
          f"{alarm['reason']}", flush=True)
  if output:
    with open(output, "w") as f:
      json.dump(report, f, indent=1)
  if plot_path:
    plot(report, plot_path)
  return {"rows": report["rows"], "windows": len(report["windows"]),
          "alarms": len(report["alarms"]),
          "alarmed_columns": sorted({a["column"] for a in report["alarms"]}),
          **({"output": output} if output else {}), **({"plot": plot_path} if plot_path else {})}

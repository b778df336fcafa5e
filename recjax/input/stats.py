"""`recjax stats`: what the raw columns behind each feature hold, to set the feature options.

Before choosing hash sizes, vocabularies, `max_len` or bucket `boundaries`, one wants each
feature's coverage (the share of rows where its column is present and non-empty), its
cardinality and most frequent values, list lengths, and for numbers the quantiles, from which
`boundaries` are proposed (edges at equal-frequency quantiles, deduplicated). The columns are
read by the same readers as training; bad rows are counted, not fatal, and a number that is
missing or unparsable counts against the coverage.
"""

import dataclasses
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recjax.input import bad_rows as bad_rows_lib
from recjax.features import spec as features_lib
from recjax.input import pipeline as input_lib
from recjax.input import readers

QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


def propose_boundaries(values: np.ndarray, buckets: int = 10) -> list[float]:
  """Edges that split the finite values into `buckets` groups of about equal size (fewer when
  values repeat), rounded to 6 significant digits."""
  finite = values[np.isfinite(values)]
  if not len(finite):
    return []
  edges = np.quantile(finite, np.linspace(0, 1, buckets + 1)[1:-1])
  edges = sorted({float(f"{e:.6g}") for e in edges})
  return [e for e in edges if e > finite.min()]     # no bucket below the smallest value


def _numeric(values: np.ndarray, buckets: int) -> dict:
  finite = values[np.isfinite(values)]
  out = {"type": "numeric", "coverage": float(len(finite) / max(len(values), 1)),
         "cardinality": int(len(np.unique(finite)))}
  if len(finite):
    out.update(mean=float(finite.mean()), std=float(finite.std()),
               quantiles={f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(finite, QUANTILES))},
               boundaries=propose_boundaries(finite, buckets))
  return out


def _list_spec(features, column: str):
  """(separator, suffix separator) when a feature reads `column` as a list, else None."""
  for f in features:
    if getattr(f, "map_column", None) == column:
      return f.separator, f.kv_separator
    if getattr(f, "column", None) == column and hasattr(f, "max_len"):
      return f.separator, f.weight_separator if getattr(f, "weighted", False) else None
    if getattr(f, "column", None) == column and getattr(f, "dim", 1) > 1:
      return f.separator, None
  return None


def _strings(values: np.ndarray, list_spec, top: int) -> dict:
  array = pa.array(values, pa.string())
  present = pc.not_equal(array, "")
  out = {"type": "string", "coverage": float(pc.mean(present.cast(pa.float64())).as_py() or 0.0)}
  if list_spec:
    separator, suffix = list_spec
    lists = pc.split_pattern(pc.if_else(present, array, None), separator)
    lengths = pc.fill_null(pc.list_value_length(lists), 0).to_numpy()
    array = pc.list_flatten(lists)
    if suffix:      # "tag:0.5" and "key:value" count by tag and key
      array = pc.replace_substring_regex(array, f"{re.escape(suffix)}[^{re.escape(suffix)}]*$", "")
    out.update(type="list", mean_length=float(lengths.mean()) if len(lengths) else 0.0,
               max_length=int(lengths.max()) if len(lengths) else 0)
  else:
    array = pc.filter(array, present)
  counts = pc.value_counts(array)
  order = np.argsort(-counts.field("counts").to_numpy(), kind="stable")[:top]
  out["cardinality"] = len(counts)
  out["top"] = [[counts.field("values")[int(i)].as_py(), int(counts.field("counts")[int(i)].as_py())]
                for i in order]
  return out


def _kind(feature) -> str:
  return next((k for k, cls in features_lib.KINDS.items() if isinstance(feature, cls)),
              type(feature).__name__)


def compute(experiment, split: str = "train", *, top: int = 10, buckets: int = 10) -> dict:
  """Per-feature statistics of `data.<split>` (every row of every source)."""
  data = dataclasses.replace(experiment.data, bad_rows="skip", max_bad_fraction=1.0)
  patterns = getattr(data, split)
  files = (list(patterns) if data.format == "synthetic"
           else input_lib.resolve_files(patterns, f"data.{split}"))
  numeric = {c for f in experiment.features for c in f.numeric_columns}
  needed = list(dict.fromkeys(c for f in experiment.features for c in f.columns))
  tally = bad_rows_lib.Tally("skip", 1.0)
  parts = []
  for path in files:
    read = readers.read(path, data, needed, numeric)
    tally.keep(read, read.problems + bad_rows_lib.non_finite(read.columns, numeric))
    parts.append(read.columns)
  columns = {c: np.concatenate([p[c] for p in parts]) for c in needed}
  by_column = {c: _numeric(v, buckets) if c in numeric
               else _strings(v, _list_spec(experiment.features, c), top)
               for c, v in columns.items()}
  return {"split": split, "files": files, "rows": int(len(columns[needed[0]])) if needed else 0,
          "bad_rows": tally.summary,
          "features": {f.name: {"kind": _kind(f), "columns": {c: by_column[c] for c in f.columns}}
                       for f in experiment.features}}


def table(stats: dict) -> str:
  """The statistics as a fixed-width table for the terminal."""
  lines = [f"{stats['split']}: {stats['rows']:,} rows from {len(stats['files'])} source(s); "
           f"bad rows: {stats['bad_rows'] or 'none'}",
           f"{'feature':<18} {'kind':<9} {'column':<14} {'coverage':>8} {'distinct':>9}  "
           "top values / quantiles p1 p50 p99 | boundaries"]
  for name, feature in stats["features"].items():
    for column, s in feature["columns"].items():
      if s["type"] == "numeric":
        q = s.get("quantiles", {})
        detail = (f"{q.get('0.01', float('nan')):.4g} {q.get('0.5', float('nan')):.4g} "
                  f"{q.get('0.99', float('nan')):.4g} | {len(s.get('boundaries', []))} edges")
      else:
        detail = ", ".join(f"{v!r}:{n}" for v, n in s["top"][:3])
        if s["type"] == "list":
          detail = f"len {s['mean_length']:.1f}/{s['max_length']}  {detail}"
      lines.append(f"{name[:18]:<18} {feature['kind']:<9} {column[:14]:<14} "
                   f"{s['coverage']:>8.3f} {s['cardinality']:>9,}  {detail[:80]}")
  return "\n".join(lines)


def run(experiment, split: str, output: str | None) -> dict:
  """Prints the table, writes the JSON file; returns a short summary for the command line."""
  stats = compute(experiment, split)
  print(table(stats), flush=True)
  if output:
    with open(output, "w") as f:
      json.dump(stats, f, indent=1)
  return {"split": split, "rows": stats["rows"], "features": len(stats["features"]),
          "bad_rows": stats["bad_rows"], "output": output}

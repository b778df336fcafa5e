"""JSON files a run rewrites (summary.json, evaluations.json) and the summary it prints:
strict JSON, written whole or not at all.

Python's json writes NaN, which no strict parser reads (a one-class eval split has a NaN
AUC); here a non-finite number becomes null with a `<key>_reason` beside it. A file is
written under a temporary name and renamed over the old one, so a kill mid-write leaves the
old file, never a truncated one that every later resume would fail to read.
"""

import json
import math
import os
import pathlib


def strict(value):
  """`value` with every NaN or infinity replaced by None (and, in a dict, a reason)."""
  if isinstance(value, dict):
    out = {}
    for k, v in value.items():
      if isinstance(v, float) and not math.isfinite(v):
        out[k], out[f"{k}_reason"] = None, f"not a number ({v}): e.g. one class in the labels"
      else:
        out[k] = strict(v)
    return out
  if isinstance(value, (list, tuple)):
    return [None if isinstance(v, float) and not math.isfinite(v) else strict(v) for v in value]
  return value


def dumps(value, **kwargs) -> str:
  return json.dumps(strict(value), allow_nan=False, **kwargs)


def write(path, value, indent: int | None = 2) -> None:
  """Writes `value` as strict JSON to `path` atomically (temporary file, then rename)."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(dumps(value, indent=indent))
  os.replace(tmp, path)

"""The replay log's rows: one per scored candidate, exactly what the model read.

A rank request becomes N rows (one per candidate), each with the request's identity, the
served model version, the candidate's score, and every raw column of the serving signature
as the model received it: the user's and the context's one value repeated, the item's own.
`defaulted` / `defaulted_reason` list the columns that were not found (a missing user or
item, a missing context value, a store that was down) and served as their default, so
coverage and training can tell a real value from a filled one.

  event_id, request_id     the ranking event (labels join on it) and the caller's request
  served_at_ms, model_version, user_key, item_key, candidate (its index in the request), score
  defaulted, defaulted_reason   lists of column names and their reasons
  <raw columns>            float32 for numeric inputs, strings for the others

The rows are built per part, not per request: `table` takes the buffered requests and makes
one Arrow array per column for all of them (the request path only appends a reference).
"""

import dataclasses
import itertools

import numpy as np
import pyarrow as pa

from recjax.errors import ConfigError
from recjax.export import saved_model

META = {"event_id": pa.string(), "request_id": pa.string(), "served_at_ms": pa.int64(),
        "model_version": pa.int64(), "user_key": pa.string(), "item_key": pa.string(),
        "candidate": pa.int32(), "score": pa.float32(),
        "defaulted": pa.list_(pa.string()), "defaulted_reason": pa.list_(pa.string())}


@dataclasses.dataclass(frozen=True)
class Request:
  """One logged request: the ranker's `Scored` record (its raw `columns` with one-row columns
  of length 1, `defaulted_user`, `defaulted_items`), who asked, when, and the scores."""
  scored: object
  request_id: str
  served_at_ms: int
  scores: np.ndarray


def schema(experiment) -> pa.Schema:
  """The log's schema: META, then the serving signature's raw columns in sorted order."""
  inputs = saved_model.serving_inputs(experiment)
  clash = sorted(set(inputs) & set(META))
  if clash:
    raise ConfigError(f"the replay log has a column {clash[0]!r} of its own; a feature reading "
                      "a raw column of that name cannot be logged (rename the column)")
  raw = [pa.field(c, pa.float32() if s.dtype.name == "float32" else pa.string())
         for c, s in sorted(inputs.items())]
  return pa.schema([pa.field(n, t) for n, t in META.items()] + raw)


def table(requests: list[Request], log_schema: pa.Schema, item_columns,
          between=lambda: None) -> pa.Table:
  """The rows of `requests` (N per request) as one table of `log_schema`; `item_columns`
  are those a missing item has defaulted (its key column is the requested key, not a
  default). Built a column at a time, in Arrow's C++ where it can be (a one-row column is
  one value per request, repeated by `take`), calling `between()` after each column: the
  writer passes a yield, so a request thread never waits long for the GIL."""
  counts = [len(r.scored.item_keys) for r in requests]
  repeat = pa.array(np.repeat(np.arange(len(requests)), counts))
  out = {
      "event_id": pa.array([r.scored.event_id for r in requests], pa.string()).take(repeat),
      "request_id": pa.array([r.request_id for r in requests], pa.string()).take(repeat),
      "served_at_ms": np.repeat([r.served_at_ms for r in requests], counts).astype(np.int64),
      "model_version": np.repeat([r.scored.version for r in requests], counts).astype(np.int64),
      "user_key": pa.array([r.scored.user_key for r in requests], pa.string()).take(repeat),
      "item_key": pa.array(list(itertools.chain.from_iterable(
          r.scored.item_keys for r in requests)), pa.string()),
      "candidate": np.concatenate([np.arange(n, dtype=np.int32) for n in counts]),
      "score": np.concatenate([np.asarray(r.scores, np.float32).reshape(-1) for r in requests]),
  }
  out["defaulted"], out["defaulted_reason"] = _defaulted(requests, counts, item_columns)
  between()
  for field in log_schema:
    if field.name in META:
      continue
    columns = [r.scored.columns[field.name] for r in requests]
    if all(len(v) == 1 for v in columns) and any(n != 1 for n in counts):   # one-row
      values = pa.array([v[0] for v in columns], field.type).take(repeat)
    elif pa.types.is_floating(field.type):
      values = np.concatenate([np.broadcast_to(np.asarray(v, np.float32).reshape(-1), (n,))
                               for v, n in zip(columns, counts)])
    else:
      values = pa.array(list(itertools.chain.from_iterable(
          v if len(v) == n else [v[0]] * n for v, n in zip(columns, counts))), pa.string())
    out[field.name] = values
    between()
  return pa.Table.from_pydict(out, schema=log_schema)


def _defaulted(requests, counts, item_columns) -> tuple[pa.Array, pa.Array]:
  """The `defaulted` and `defaulted_reason` list columns. Most requests default nothing:
  only those that do are walked row by row."""
  names, reasons, lengths = [], [], []
  for r, n in zip(requests, counts):
    one = r.scored.defaulted_user
    if not one and not r.scored.defaulted_items:
      lengths.append(np.zeros(n, np.int32))
      continue
    for i in range(n):
      reason = r.scored.defaulted_items.get(i)
      names += [*one, *(item_columns if reason else ())]
      reasons += [*one.values(), *([reason] * len(item_columns) if reason else ())]
      lengths.append(np.asarray([len(one) + (len(item_columns) if reason else 0)], np.int32))
  offsets = pa.array(np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int32))
  return (pa.ListArray.from_arrays(offsets, pa.array(names, pa.string())),
          pa.ListArray.from_arrays(offsets, pa.array(reasons, pa.string())))



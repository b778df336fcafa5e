"""`recjax replay join`: label events joined to the replay log, as the next training data.

The replay log holds one row per scored candidate (`rows`); label events are Parquet rows of
  event_id (or request_id, `key`), item_key, at_ms (when the click, play... happened) and
  one numeric column per label (the tasks' label columns and upsampling columns).
The join, one SQL text run by DuckDB (embedded, the default) or Spark SQL (`engine="spark"`,
a cluster at scale) with the same rows out:

  1. a served row repeated under one (key, item_key) (a retried request) counts once: the
     first served (served_at_ms, then candidate);
  2. a label event repeated exactly (a client retrying its callback) counts once;
  3. a served row takes the label events of its key and item within `label_window_s` after it
     was served: per label column the maximum (a click is a click), or the sum for the
     columns of `sum_labels` (watch time); a row with none is a negative, 0;
  4. label events outside the window (before the impression, or later than the window) are
     not joined, and counted: EasyRec waits for positives the same way;
  5. a served row whose window has not closed by `until_ms` (default: the latest label
     event) is held back, counted as pending: emitting it now would make a late click a
     wrong negative.
The output keeps the raw columns the model read, the labels and the row's identity, so
`recjax train` reads it as it is (its `data.train` names the file); upsampling applies in
training, from the upsampling column the join carried (`tasks.upsample_column`).
"""

import dataclasses
import pathlib
import re
import shutil
import time

from recjax.errors import DataError
from recjax.replay import rows as rows_lib

KEYS = ("event_id", "request_id")
OUTPUT = "joined.parquet"


@dataclasses.dataclass(frozen=True)
class Plan:
  """What one join reads and writes: the replay's columns, the label columns (and which are
  summed), the key, the window and the cut-off."""
  replay_columns: tuple
  labels: tuple
  summed: tuple
  key: str
  window_ms: int
  until_ms: int | None


def label_columns(experiment) -> tuple[str, ...]:
  """The columns the label events bring: the tasks' columns the replay log lacks."""
  logged = set(rows_lib.schema(experiment).names)
  return tuple(dict.fromkeys(c for t in experiment.tasks for c in t.columns if c not in logged))


def sql(plan: Plan, quote) -> tuple[str, str]:
  """(the joined rows' query, the counts' query) over views `replay` and `labels`."""
  q = quote
  key, item = q(plan.key), q("item_key")
  columns = ", ".join(f"r.{q(c)}" for c in plan.replay_columns)
  labels = ", ".join(q(c) for c in plan.labels)
  aggregate = ", ".join(f"{'SUM' if c in plan.summed else 'MAX'}(l.{q(c)}) AS {q(c)}"
                        for c in plan.labels)
  cut = (f"(SELECT MAX({q('at_ms')}) FROM labels)" if plan.until_ms is None
         else str(plan.until_ms))
  within = (f"l.{q('at_ms')} >= r.{q('served_at_ms')} AND "
            f"l.{q('at_ms')} <= r.{q('served_at_ms')} + {plan.window_ms}")
  common = f"""
WITH ranked AS (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY {key}, {item}
                               ORDER BY {q('served_at_ms')}, {q('candidate')}) AS replay_rank
  FROM replay),
r AS (SELECT * FROM ranked WHERE replay_rank = 1),
l AS (SELECT DISTINCT {key}, {item}, {q('at_ms')}, {labels} FROM labels),
matched AS (
  SELECT r.{key}, r.{item}, {aggregate}, COUNT(*) AS label_events
  FROM r JOIN l ON r.{key} = l.{key} AND r.{item} = l.{item} AND {within}
  GROUP BY r.{key}, r.{item}),
cut AS (SELECT {cut} AS until_ms)"""
  filled = ", ".join(f"COALESCE(m.{q(c)}, 0) AS {q(c)}" for c in plan.labels)
  rows = f"""{common}
SELECT {columns}, {filled}
FROM r LEFT JOIN matched m ON r.{key} = m.{key} AND r.{item} = m.{item}
CROSS JOIN cut
WHERE r.{q('served_at_ms')} + {plan.window_ms} <= cut.until_ms"""
  counts = f"""{common},
keyed AS (
  SELECT l.{q('at_ms')} AS at_ms, r.{q('served_at_ms')} AS served_at_ms
  FROM l LEFT JOIN r ON r.{key} = l.{key} AND r.{item} = l.{item})
SELECT
  (SELECT COUNT(*) FROM replay) AS replay_rows,
  (SELECT COUNT(*) FROM replay) - (SELECT COUNT(*) FROM r) AS replay_duplicates,
  (SELECT COUNT(*) FROM r CROSS JOIN cut
   WHERE r.{q('served_at_ms')} + {plan.window_ms} > cut.until_ms) AS rows_pending,
  (SELECT COUNT(*) FROM labels) AS label_events,
  (SELECT COUNT(*) FROM labels) - (SELECT COUNT(*) FROM l) AS label_duplicates,
  (SELECT COUNT(*) FROM keyed WHERE served_at_ms IS NULL) AS labels_unmatched,
  (SELECT COUNT(*) FROM keyed WHERE served_at_ms IS NOT NULL AND (at_ms < served_at_ms
   OR at_ms > served_at_ms + {plan.window_ms})) AS labels_outside_window,
  (SELECT COALESCE(SUM(label_events), 0) FROM matched) AS labels_joined,
  (SELECT until_ms FROM cut) AS until_ms"""
  return rows, counts


def _ident(name: str) -> str:
  if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
    raise DataError(f"column {name!r}: the join takes columns named by letters, digits and '_'")
  return name


def plan_of(experiment, replay_files, label_files, key: str = "event_id",
            until_ms: int | None = None) -> Plan:
  """Checks the inputs' columns and makes the plan (DataError names a missing column)."""
  import pyarrow.parquet as pq
  if key not in KEYS:
    raise DataError(f"--key {key!r}: expected one of {', '.join(KEYS)}")
  spec = experiment.serving.replay
  if spec is None:
    raise DataError("the config has no serving.replay section (the label window and the "
                    "summed labels are set there)")
  replay_columns = tuple(rows_lib.schema(experiment).names)
  labels = label_columns(experiment)
  for path in replay_files:
    missing = [c for c in replay_columns if c not in pq.read_schema(path).names]
    if missing:
      raise DataError(f"{path}: the replay part lacks column {missing[0]!r} (written for "
                      "another config?)")
  for path in label_files:
    names = pq.read_schema(path).names
    missing = [c for c in (key, "item_key", "at_ms", *labels) if c not in names]
    if missing:
      raise DataError(f"{path}: the label events lack column {missing[0]!r}; they need "
                      f"{key}, item_key, at_ms and {', '.join(labels)}")
  for c in (*replay_columns, *labels):
    _ident(c)
  unknown = [c for c in spec.sum_labels if c not in labels]
  if unknown:
    raise DataError(f"serving.replay.sum_labels: {unknown[0]!r} is not a label column the "
                    f"tasks read ({', '.join(labels)})")
  summed = tuple(spec.sum_labels)
  return Plan(replay_columns, labels, summed, key, int(spec.label_window_s * 1000), until_ms)


def join(experiment, replay_dir, labels_glob, output, engine: str = "duckdb",
         key: str = "event_id", until_ms: int | None = None) -> dict:
  """Writes `<output>/joined.parquet` and returns the counts (and the seconds it took)."""
  import glob
  from recjax.replay import writer
  replay_files = [str(p) for p in writer.parts(replay_dir)]
  if not replay_files:
    raise DataError(f"{replay_dir}: no replay parts (part-*.parquet)")
  label_files = sorted(glob.glob(labels_glob))
  if not label_files:
    raise DataError(f"--labels {labels_glob!r} matches no file")
  plan = plan_of(experiment, replay_files, label_files, key, until_ms)
  output = pathlib.Path(output)
  output.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  counts = run(plan, replay_files, label_files, output / OUTPUT, engine)
  counts["rows_joined"] = counts["replay_rows"] - counts["replay_duplicates"] - counts[
      "rows_pending"]
  return {"engine": engine, "output": str(output / OUTPUT), **counts,
          "seconds": round(time.perf_counter() - start, 3)}


def run(plan: Plan, replay_files, label_files, path, engine: str = "duckdb") -> dict:
  """Runs `plan` on `engine`, writing the joined rows to `path`; the counts."""
  engines = {"duckdb": _duckdb, "spark": _spark}
  if engine not in engines:
    raise DataError(f"--engine {engine!r}: expected duckdb or spark")
  counts = engines[engine](plan, replay_files, label_files, pathlib.Path(path))
  return {k: int(v) if v is not None else None for k, v in counts.items()}


def _duckdb(plan, replay_files, label_files, path) -> dict:
  import duckdb
  con = duckdb.connect()
  try:
    con.execute(f"CREATE VIEW replay AS SELECT * FROM read_parquet({replay_files!r})")
    con.execute(f"CREATE VIEW labels AS SELECT * FROM read_parquet({label_files!r})")
    rows, counts = sql(plan, lambda c: f'"{c}"')
    tmp = path.with_name(f".{path.name}.tmp")
    con.execute(f"COPY ({rows}) TO '{tmp}' (FORMAT parquet)")
    tmp.replace(path)
    result = con.execute(counts)
    return dict(zip([d[0] for d in result.description], result.fetchone()))
  finally:
    con.close()


def _spark(plan, replay_files, label_files, path) -> dict:
  """The same SQL on pyspark (local[*] unless SPARK_MASTER / spark-submit says otherwise);
  its part files are gathered into one Parquet file like DuckDB's."""
  try:
    from pyspark.sql import SparkSession
  except ImportError:
    raise DataError("--engine spark needs pyspark: pip install 'recjax[spark]' (and Java 17)"
                    ) from None
  import os
  spark = (SparkSession.builder.master(os.environ.get("SPARK_MASTER", "local[*]"))
           .appName("recjax-replay-join").config("spark.ui.enabled", "false")
           .config("spark.sql.shuffle.partitions", "8")
           .config("spark.ui.showConsoleProgress", "false")
           .getOrCreate())
  try:
    spark.read.parquet(*replay_files).createOrReplaceTempView("replay")
    spark.read.parquet(*label_files).createOrReplaceTempView("labels")
    rows, counts = sql(plan, lambda c: f"`{c}`")
    staging = path.with_name(f".{path.name}.spark")
    shutil.rmtree(staging, ignore_errors=True)
    spark.sql(rows).coalesce(1).write.parquet(str(staging))
    (part,) = staging.glob("part-*.parquet")
    part.replace(path)
    shutil.rmtree(staging)
    return spark.sql(counts).collect()[0].asDict()
  finally:
    spark.stop()

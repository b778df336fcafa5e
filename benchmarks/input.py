"""Input pipeline throughput against tf.data and against the DeepFM train step, in one run.

  python benchmarks/input.py [--rows 1000000] [--steps 10] [--repeats 3] [--workdir DIR]

Writes a Criteo-like split (13 integer counts, 26 categorical columns, a label; the synthetic
`criteo` schema) as one CSV and one Parquet file (row groups of 100,000 rows) to a temporary
directory, then measures rows per second from the file to training batches of 4096:
`input.load_split` (read, parse, every feature transform: log1p of the counts, FarmHash of the
26 strings) and one epoch of the Grain batch iterator, with `data.workers` 1 and 2 (parse and
transform in this process, or in 2 worker processes each taking half of the file: CSV byte
ranges, Parquet row groups; their start-up, a fork server importing recjax, is in the time).
`--repeats` runs each case that many times and reports the median. Beside it, in the same
run:

  tf.data  the same parse and hashing of the CSV with tf.data (TextLineDataset, batch,
           decode_csv, to_hash_bucket_fast, log1p; parallel map, prefetch), one epoch.
  train    examples per second of the real jitted `train.make_train_step` of a DeepFM
           (dim 16, MLP 400-400-400, batch 4096) on the same machine, after 3 untimed steps.

Goal (issue 4): the pipeline delivers at least twice what the train step consumes. Prints a
JSON line per measurement; the last line holds `rows_per_sec`, `ratio_to_tfdata` and
`ratio_to_train_step` for the best source and worker count.
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax                                       # noqa: E402
import ml_collections                            # noqa: E402
import numpy as np                               # noqa: E402
import pyarrow.csv as pa_csv                     # noqa: E402
import pyarrow.parquet as pq                     # noqa: E402
import tensorflow as tf                          # noqa: E402

from recjax import config as config_lib          # noqa: E402
from recjax.input import pipeline as input_lib            # noqa: E402
from recjax.input import synthetic                     # noqa: E402
from recjax.train import loop as train                         # noqa: E402

BATCH = 4096
NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]


def experiment(path: str, fmt: str, workers: int = 1):
  schema = synthetic.CRITEO
  config = ml_collections.ConfigDict()
  config.data = dict(format=fmt, train=(path,), workers=workers)
  config.label = dict(column="label")
  config.features = {**{c: dict(kind="numeric", log1p=True) for c in NUMERIC},
                     **{c: dict(kind="id", hash_bucket_size=schema[c]["cardinality"])
                        for c in CATEGORICAL}}
  config.groups = dict(deep=dict(features=tuple(CATEGORICAL), dim=16))
  config.model = dict(name="deepfm", hidden=(400, 400, 400), first_order_group="deep",
                      fm_group="deep")
  config.train = dict(batch_size=BATCH, seed=0)
  config.optimizer = dict(sparse=dict(learning_rate=0.05))
  return config_lib.experiment(config)


def pipeline(path: str, fmt: str, workers: int, repeats: int) -> dict:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    split = input_lib.load_split(experiment(path, fmt, workers), "train")
    loaded = time.perf_counter()
    batches = input_lib.batches_per_epoch(split, BATCH)
    for _ in input_lib.train_iterator(split, BATCH, batches, seed=0):
      pass
    times.append((loaded - start, time.perf_counter() - loaded))
  load_s, batch_s = (float(np.median(t)) for t in zip(*times))
  return {"source": fmt, "workers": workers, "rows": split.rows, "repeats": repeats,
          "load_s": round(load_s, 2), "batch_s": round(batch_s, 2),
          "load_s_all": [round(t[0], 2) for t in times],
          "rows_per_sec": round(split.rows / (load_s + batch_s))}


def tfdata(path: str, names: list[str]) -> dict:
  buckets = {c: synthetic.CRITEO[c]["cardinality"] for c in CATEGORICAL}
  defaults = [[0.0] if c in NUMERIC or c == "label" else [""] for c in names]

  def parse(lines):
    fields = dict(zip(names, tf.io.decode_csv(lines, defaults)))
    dense = tf.math.log1p(tf.stack([fields[c] for c in NUMERIC], 1))
    ids = tf.stack([tf.strings.to_hash_bucket_fast(fields[c], buckets[c]) for c in CATEGORICAL], 1)
    return {"dense": dense, "ids": tf.cast(ids, tf.int32), "label": fields["label"]}

  dataset = (tf.data.TextLineDataset(path).skip(1).batch(BATCH)
             .map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4))
  start, rows = time.perf_counter(), 0
  for batch in dataset:
    rows += int(batch["label"].shape[0])
  return {"source": "tf.data csv", "rows": rows,
          "rows_per_sec": round(rows / (time.perf_counter() - start))}


def train_step(path: str, steps: int) -> dict:
  exp = experiment(path, "parquet")
  split = input_lib.load_split(exp, "train")
  batches = list(input_lib.train_iterator(split, BATCH, steps + 3, seed=0))
  state = jax.jit(lambda rng: train.init_state(exp, rng))(jax.random.key(0))
  step = jax.jit(train.make_train_step(exp), donate_argnums=0)
  for batch in batches[:3]:
    state, metrics = step(state, batch)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for batch in batches[3:]:
    state, metrics = step(state, batch)
  jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  return {"source": "deepfm train step", "steps": steps, "loss": float(metrics["loss"]),
          "examples_per_sec": round(steps * BATCH / seconds)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workdir", help="where to write the files (default: a temp dir)")
  args = parser.parse_args()
  print(json.dumps({"load_average_at_start": [round(x, 1) for x in os.getloadavg()]}), flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    workdir = pathlib.Path(args.workdir or tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    schema = synthetic.schema(dict(rows=args.rows, eval_rows=0, seed=0, columns="criteo"))
    table = synthetic.generate(schema, "train")
    paths = {"csv": str(workdir / "criteo.csv"), "parquet": str(workdir / "criteo.parquet")}
    pa_csv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"], row_group_size=100_000)
    results = []
    for fmt in ("csv", "parquet"):
      for workers in (1, 2):
        results.append(pipeline(paths[fmt], fmt, workers, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    reference = tfdata(paths["csv"], table.column_names)
    print(json.dumps(reference), flush=True)
    step = train_step(paths["parquet"], args.steps)
    print(json.dumps(step), flush=True)
  best = max(results, key=lambda r: r["rows_per_sec"])
  csv_best = max((r for r in results if r["source"] == "csv"), key=lambda r: r["rows_per_sec"])
  print(json.dumps({
      "rows_per_sec": best["rows_per_sec"], "source": best["source"], "workers": best["workers"],
      "ratio_to_tfdata": round(best["rows_per_sec"] / reference["rows_per_sec"], 2),
      "csv_ratio_to_tfdata": round(csv_best["rows_per_sec"] / reference["rows_per_sec"], 2),
      "ratio_to_train_step": round(best["rows_per_sec"] / step["examples_per_sec"], 2),
      "train_examples_per_sec": step["examples_per_sec"],
      "load_average": [round(x, 1) for x in os.getloadavg()], "cpus": os.cpu_count(),
      "tfdata_rows_per_sec": reference["rows_per_sec"]}), flush=True)


if __name__ == "__main__":
  main()

"""End to end: DeepFM on the standard synthetic Criteo-like data, against its dense-only floor.

  python ../shared/bench/make_data.py --out /tmp/bench_data      # once, about 20 s
  python benchmarks/train.py --data /tmp/bench_data [--rounds 3] [--no-grain]

The workload of ../shared/BENCHMARKS.md: 1,000,000 training rows (13 numeric columns already
log1p-transformed, 26 id columns with Criteo's cardinalities capped at 10^6: 5,569,296 table
rows), DeepFM with embedding dim 16 (first-order weights in a second, 1-dim group over the same
ids), MLP 400-400-400, batch 4096, row-wise Adagrad (0.05, accumulator from 0 as FBGEMM's) on
tables, Adam (1e-3) on dense parameters, one epoch. The ids are read with the `identity` kind
(`num_buckets` from the data's meta.json), so every id has its own row, as in the teacher.

Measured in this run, each figure the median of `--rounds` interleaved rounds (a change of load
on a shared machine then hits both alike), each round a pass over the epoch's batches with the
first 20 steps excluded:

  train   the real jitted `train.make_train_step` (table lookup, FM + MLP forward and
          backward, Adam, the fused sparse row-wise Adagrad update of the touched rows), the
          state donated, batches already in memory (device arrays).
  floor   the same step with the embedding outputs fed in as inputs (looked up once, before
          timing), so only the FM and MLP compute and Adam remain; it still computes the
          gradient with respect to the embeddings, which the real step hands to the tables.
  grain   `train.train_and_evaluate` on the Parquet files (read, every feature transform,
          the Grain batch iterator, host-to-device copies, checkpoint at the end): its
          steady-state examples/s (first 20 steps excluded), its wall time, and the
          evaluation AUC on the 200,000 evaluation rows after one epoch (the teacher reaches
          0.8051; BENCHMARKS.md: TorchRec 0.751).

Goal (issue 3): `ratio_to_floor` = train / floor at least 0.87. The last line is a JSON object
with `examples_per_sec`, `floor_examples_per_sec`, `ratio_to_floor`, `grain_examples_per_sec`
and `eval_auc`.
"""

import argparse
import json
import os
import pathlib
import resource
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax                                       # noqa: E402
import ml_collections                            # noqa: E402
import numpy as np                               # noqa: E402
import optax                                     # noqa: E402

from recjax import config as config_lib          # noqa: E402
from recjax.embedding import tables as embedding                     # noqa: E402
from recjax.embedding import hugepages                     # noqa: E402
from recjax.input import pipeline as input_lib            # noqa: E402
from recjax.tasks import spec as tasks_lib            # noqa: E402
from recjax.train import loop as train                         # noqa: E402

BATCH = 4096
WARMUP = 20                                      # steps excluded from every figure
NUMERIC = [f"I{i}" for i in range(1, 14)]
CATEGORICAL = [f"C{i}" for i in range(1, 27)]


def experiment(data: pathlib.Path):
  """The BENCHMARKS.md DeepFM on `data` (make_data.py's output directory)."""
  meta = json.loads((data / "meta.json").read_text())
  config = ml_collections.ConfigDict()
  config.data = dict(format="parquet", train=(str(data / "train.parquet"),),
                     eval=(str(data / "eval.parquet"),))
  config.label = dict(column="label")
  config.features = {**{c: dict(kind="numeric") for c in NUMERIC},
                     **{c: dict(kind="identity", num_buckets=n)
                        for c, n in zip(CATEGORICAL, meta["vocab_sizes"])}}
  config.groups = dict(wide=dict(features=tuple(CATEGORICAL), dim=1, init_scale=0.0),
                       deep=dict(features=tuple(CATEGORICAL), dim=16, init_scale=0.05))
  config.model = dict(name="deepfm", hidden=(400, 400, 400), first_order_group="wide",
                      fm_group="deep")
  config.train = dict(batch_size=BATCH, eval_batch_size=16384, epochs=1, seed=0,
                      log_every=50, checkpoint_every=10**9, progress_bar=False)
  config.optimizer = dict(dense=dict(name="adam", learning_rate=1e-3),
                          # FBGEMM's (TorchRec's) row-wise Adagrad: accumulator from 0
                          sparse=dict(name="rowwise_adagrad", learning_rate=0.05,
                                      initial_accumulator=0.0, epsilon=1e-8))
  config.export = dict(enabled=False)
  return config_lib.experiment(config)


def make_floor_step(exp):
  """The train step without the tables: embeddings come in with the batch."""
  tx = exp.dense_optimizer.build()

  def floor_step(state, batch):
    params, opt_state = state

    def loss_fn(params, embedded):
      outputs = exp.model.apply({"params": params}, embedded, batch["dense"])
      return tasks_lib.total_loss(exp.tasks, outputs, batch)

    (loss, _), (param_grads, embedding_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(params, batch["embedded"])
    updates, opt_state = tx.update(param_grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), (loss, embedding_grads)

  return floor_step


def timed_pass(step, state, batches) -> tuple:
  """Runs every batch; examples/s over the steps after WARMUP, and the median step ms."""
  stamps = []
  for i, batch in enumerate(batches):
    state, out = step(state, batch)
    if i >= WARMUP - 1:
      jax.block_until_ready((state, out))
      stamps.append(time.perf_counter())
  seconds = np.diff(stamps)
  return state, (len(seconds) * BATCH / (stamps[-1] - stamps[0]),
                 float(np.median(seconds)) * 1e3)


def in_memory(exp, split, rounds: int) -> tuple[dict, dict]:
  """(train, floor) figures from interleaved rounds over the epoch's batches in memory."""
  steps = input_lib.batches_per_epoch(split, BATCH)
  batches = [jax.device_put(b) for b in input_lib.train_iterator(split, BATCH, steps, seed=0)]
  state = jax.jit(lambda rng: train.init_state(exp, rng))(jax.random.key(0))
  hugepages.advise((state.tables, state.slots))
  plans = exp.embedding_plan.groups
  lookup = jax.jit(lambda tables, b: embedding.lookup(tables, plans, b["ids"], b["weights"]))
  floor_batches = [{"embedded": lookup(state.tables, b), "dense": b["dense"],
                    **{k: b[k] for k in ("labels", "label_masks", "loss_weights")}}
                   for b in batches]
  # copies: the train step donates its own state
  floor_state = jax.tree.map(lambda x: x.copy(), (state.params, state.opt_state))
  train_step = jax.jit(train.make_train_step(exp), donate_argnums=0)
  floor_step = jax.jit(make_floor_step(exp), donate_argnums=0)
  figures = {"train": [], "floor": []}
  for _ in range(rounds):
    state, (rate, ms) = timed_pass(train_step, state, batches)
    figures["train"].append((rate, ms))
    floor_state, (rate, ms) = timed_pass(floor_step, floor_state, floor_batches)
    figures["floor"].append((rate, ms))
  out = []
  for name in ("train", "floor"):
    rates, ms = zip(*figures[name])
    out.append({"step": name, "steps_per_round": steps - WARMUP, "rounds": rounds,
                "examples_per_sec": round(float(np.median(rates))),
                "median_step_ms": round(float(np.median(ms)), 2),
                "examples_per_sec_rounds": [round(r) for r in rates]})
  return out[0], out[1]


def grain_run(exp) -> dict:
  """One epoch through the product's loop, from the Parquet files, then evaluation."""
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    summary = train.train_and_evaluate(exp, workdir, run_export=False)
    wall = time.perf_counter() - start
  return {"step": "grain", "steps": summary["steps"], "loss": summary["loss"],
          "examples_per_sec": round(summary["examples_per_s"]),
          "wall_s": round(wall, 1), "eval_auc": round(summary["eval"]["auc"], 4),
          "eval_log_loss": round(summary["eval"]["log_loss"], 4)}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data", default="/tmp/bench_data",
                      help="make_data.py's output directory (meta.json, train/eval.parquet)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--no-grain", action="store_true", help="skip the Grain-fed run")
  args = parser.parse_args()
  data = pathlib.Path(args.data)
  if not (data / "meta.json").exists():
    raise SystemExit(f"{data}/meta.json not found: run python ../shared/bench/make_data.py "
                     f"--out {data} first")
  print(json.dumps({"load_average_at_start": [round(x, 1) for x in os.getloadavg()],
                    "devices": jax.device_count(), "cpus": os.cpu_count()}), flush=True)
  exp = experiment(data)
  start = time.perf_counter()
  split = input_lib.load_split(exp, "train")
  print(json.dumps({"step": "load", "rows": split.rows,
                    "seconds": round(time.perf_counter() - start, 1)}), flush=True)
  real, floor = in_memory(exp, split, args.rounds)
  print(json.dumps(real), flush=True)
  print(json.dumps(floor), flush=True)
  del split
  grain = grain_run(exp) if not args.no_grain else {}
  if grain:
    print(json.dumps(grain), flush=True)
  print(json.dumps({
      "examples_per_sec": real["examples_per_sec"],
      "floor_examples_per_sec": floor["examples_per_sec"],
      "ratio_to_floor": round(real["examples_per_sec"] / floor["examples_per_sec"], 3),
      "train_step_ms": real["median_step_ms"], "floor_step_ms": floor["median_step_ms"],
      "grain_examples_per_sec": grain.get("examples_per_sec"),
      "grain_wall_s": grain.get("wall_s"),
      "eval_auc": grain.get("eval_auc"),
      "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
      "load_average": [round(x, 1) for x in os.getloadavg()]}), flush=True)


if __name__ == "__main__":
  main()

"""The closed loop on the synthetic ranking world: train, serve, log, join, train again.

  python benchmarks/loop.py [--variant smoke|full] [--requests 400] [--candidates 100]

  1. day 1: `recjax train` on the world's impressions (configs/synthetic_ranking.py);
  2. serve it (the ranking service in this process over localhost HTTP, the embedded store)
     to simulated traffic: a user drawn by activity, 100 candidates by popularity, a context;
     `--requests` requests to a server with the replay log, each after one to a server of
     the same model and store without it (`serving_p99_ratio_replay_on_off`; 10 warm-up);
  3. the world's hidden teacher decides each candidate's click; a click's callback arrives
     after an exponential delay (mean 5 minutes), a few after the 30-minute label window;
  4. `recjax replay join` (DuckDB, and Spark when pyspark and Java are there: the same rows?)
     and `recjax replay verify` (every logged score re-scored: `parity_max_abs_diff`);
  5. day 2: `recjax train --init_from day1` on the joined rows;
  6. days 1 and 2 evaluated on fresh held-out traffic labelled by the teacher;
  7. the join at scale: 1,000,000 replay rows x 1,000,000 label events in DuckDB.
Prints one JSON line per phase, the summary last. Every process started here ends by itself.
"""

import argparse
import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "synthetic_ranking.py"
DAY_MS = 86_400_000


def _cli(*args) -> dict:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-m", "recjax.main", *map(str, args)], env=env,
                          capture_output=True, text=True, cwd=ROOT)
  if result.returncode != 0:
    raise RuntimeError(f"recjax {' '.join(map(str, args[:2]))} failed:\n{result.stderr[-3000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def _print(phase: str, **figures) -> None:
  print(json.dumps({"phase": phase, **figures}), flush=True)


class Traffic:
  """Simulated requests and their clicks, from the world's teacher."""

  def __init__(self, world_lib, variant: str, seed: int):
    self.world = world_lib
    self.probability, tables = world_lib.teacher(variant)
    self.users, self.items = tables["users"], tables["items"]
    self.user_weight = tables["user"]["weight"]
    self.popularity = tables["item"]["popularity"]
    self.rng = np.random.default_rng(seed)

  def request(self, at_ms: int, candidates: int) -> tuple[dict, dict]:
    rng, w = self.rng, self.world
    u = int(rng.choice(len(self.user_weight), p=self.user_weight))
    items = np.sort(rng.choice(len(self.popularity), candidates, replace=False,
                               p=self.popularity))
    seconds = at_ms // 1000
    context = {"hour": int(seconds // 3600 % 24), "weekday": int((seconds // 86400 + 3) % 7),
               "page": int(rng.choice(len(w.PAGES), p=[0.35, 0.25, 0.2, 0.15, 0.05])),
               "position": int(min(rng.geometric(0.12), w.MAX_POSITION)),
               "network": int(rng.choice(len(w.NETWORKS), p=[0.55, 0.15, 0.25, 0.05]))}
    body = {"user": {"key": f"u{u}"}, "items": [f"i{i}" for i in items],
            "context": {**context, "page": w.PAGES[context["page"]],
                        "network": w.NETWORKS[context["network"]]}}
    return body, {"u": u, "i": items, "context": context}

  def clicks(self, truth: dict) -> np.ndarray:
    n = len(truth["i"])
    context = {k: np.full(n, v) for k, v in truth["context"].items()}
    p = self.probability(np.full(n, truth["u"]), truth["i"], context)
    return self.rng.random(n) < p

  def heldout(self, n: int, first_ms: int, path) -> None:
    """`n` fresh impressions as training-format rows (every raw column and the click)."""
    users, items = self.users.to_pylist(), self.items.to_pylist()
    rows = []
    while len(rows) < n:
      body, truth = self.request(first_ms + len(rows) * 1000, 10)
      clicks = self.clicks(truth)
      for key, i, click in zip(body["items"], truth["i"], clicks):
        rows.append({**users[truth["u"]], **items[i], **body["context"], "click": int(click)})
    pq.write_table(pa.Table.from_pylist(rows[:n]), path)


async def _post(client, body) -> float:
  start = time.perf_counter()
  r = await client.post("/v1/models/synthetic_ranking:rank", json=body)
  answer = await r.json()
  if r.status != 200:
    raise RuntimeError(f"rank answered {r.status}: {answer}")
  return time.perf_counter() - start


async def _serve_both(off_server, off_bodies, on_server, on_bodies, on_request):
  """Alternates one request to the server without the replay log and one to the server
  with it (the same model and store), so drift over the run hits both alike."""
  from aiohttp.test_utils import TestClient, TestServer
  off, on = [], []
  async with TestClient(TestServer(off_server.app(), host="127.0.0.1")) as off_client, \
      TestClient(TestServer(on_server.app(), host="127.0.0.1")) as on_client:
    for off_body, on_body in zip(off_bodies, on_bodies):
      off.append(await _post(off_client, off_body))
      on_request(on_body)
      on.append(await _post(on_client, on_body))
  return off[10:], on[10:]


def serve_traffic(args, experiment, workdir, traffic, replay_dir, start_ms):
  """Phase off then on; (label events table, summary figures)."""
  from recjax.export import writes
  from recjax.replay import writer as writer_lib
  from recjax.serve import store as store_lib
  from recjax.serve import versions as versions_lib
  from recjax.serve.app import Server
  versions = versions_lib.of(experiment, writes.base_path(experiment, workdir))
  assert versions.poll(), versions.errors
  store = store_lib.EmbeddedStore(experiment)
  now = [start_ms]
  made = [traffic.request(start_ms + k * 2000, args.candidates) for k in range(args.requests)]
  off = [traffic.request(start_ms - k * 2000, args.candidates)[0] for k in range(args.requests)]
  writer = writer_lib.open_writer(experiment, workdir, replay_dir, clock=lambda: now[0] / 1000)
  server = Server(experiment, versions, store, replay=writer)
  truths = {}

  def on_request(body):
    k = len(truths)
    body["event_id"] = f"loop-{k}"
    now[0] = start_ms + k * 2000
    truths[body["event_id"]] = (now[0], made[k][1])

  off_latencies, on_latencies = asyncio.run(_serve_both(
      Server(experiment, versions, store), off, server, [b for b, _ in made], on_request))
  writer.close()
  events, outside = [], 0
  window_ms = experiment.serving.replay.label_window_s * 1000
  for event_id, (served_ms, truth) in truths.items():
    for item, click in zip(truth["i"], traffic.clicks(truth)):
      if click:
        at = served_ms + int(traffic.rng.exponential(300_000))
        outside += at > served_ms + window_ms
        events.append({"event_id": event_id, "item_key": f"i{item}", "at_ms": at,
                       "click": 1.0})
  figures = {"requests": len(made), "rows_logged": writer.rows_logged,
             "rows_written": writer.rows_written, "rows_lost": writer.rows_lost + (
                 writer.rows_logged - writer.rows_written),
             "clicks": len(events), "labels_outside_window_expected": outside,
             "until_ms": start_ms + len(made) * 2000 + int(window_ms),
             **{f"p{q}_ms_replay_{name}": round(float(np.percentile(v, q)) * 1000, 2)
                for name, v in (("off", off_latencies), ("on", on_latencies)) for q in (50, 99)}}
  figures["serving_p99_ratio_replay_on_off"] = round(
      figures["p99_ms_replay_on"] / figures["p99_ms_replay_off"], 3)
  return pa.Table.from_pylist(events), figures


def scale_join(experiment, rows: int, tmp) -> float:
  """Seconds of a DuckDB join of `rows` replay rows (copies of logged ones under new event
  ids) and `rows` label events."""
  from recjax.replay import join as join_lib
  from recjax.replay import writer as writer_lib
  logged = pa.concat_tables(pq.read_table(p) for p in writer_lib.parts(tmp / "replay"))
  rng = np.random.default_rng(0)
  big = logged.take(pa.array(rng.integers(0, logged.num_rows, rows)))
  events = pa.array([f"big-{k // 100}" for k in range(rows)])
  big = big.set_column(big.schema.get_field_index("event_id"), "event_id", events)
  (tmp / "big").mkdir()
  pq.write_table(big, tmp / "big" / "part-big-000000.parquet")
  pick = rng.integers(0, rows, rows)
  labels = pa.table({"event_id": big["event_id"].take(pa.array(pick)),
                     "item_key": big["item_key"].take(pa.array(pick)),
                     "at_ms": pc.add(big["served_at_ms"].take(pa.array(pick)),
                                             pa.array(rng.integers(0, 3_600_000, rows))),
                     "click": np.ones(rows)})
  pq.write_table(labels, tmp / "big_labels.parquet")
  counts = join_lib.join(experiment, tmp / "big", str(tmp / "big_labels.parquet"),
                         tmp / "big_out")
  return counts["seconds"]


def _auc(metrics):
  """The AUC in an evaluation summary ({"auc": x} or {task: {"auc": x}})."""
  if "auc" in metrics:
    return metrics["auc"]
  return next(_auc(v) for v in metrics.values() if isinstance(v, dict))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--variant", default="smoke", choices=("smoke", "full"))
  parser.add_argument("--requests", type=int, default=1000)
  parser.add_argument("--candidates", type=int, default=100)
  parser.add_argument("--heldout", type=int, default=20_000)
  parser.add_argument("--scale-rows", type=int, default=1_000_000)
  args = parser.parse_args()
  from recjax import config as config_lib
  from recjax.datasets import synthetic_ranking as world_lib
  from recjax.replay import join as join_lib
  from recjax.replay import verify as verify_lib
  world_lib.prepare_variant(args.variant)
  config = f"{CONFIG}:smoke" if args.variant == "smoke" else str(CONFIG)
  experiment = config_lib.experiment(config_lib.load(config), "synthetic_ranking")
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="recjax-loop-"))
  summary = {"variant": args.variant}
  try:
    start = time.perf_counter()
    day1 = _cli("train", "--config", config, "--workdir", tmp / "day1", "--no-eval",
                "--config.train.progress_bar=False")
    _print("day1_train", steps=experiment.train.steps, rows=day1.get("train_rows"),
           seconds=round(time.perf_counter() - start, 1))
    traffic = Traffic(world_lib, args.variant, seed=1)
    start_ms = (world_lib.START + (world_lib.TRAIN_DAYS + world_lib.EVAL_DAYS) * 86400) * 1000
    labels, figures = serve_traffic(args, experiment, tmp / "day1", traffic, tmp / "replay",
                                    start_ms)
    pq.write_table(labels, tmp / "labels.parquet")
    until = figures.pop("until_ms")         # every window has closed: no row is pending
    _print("serve", **figures)
    summary |= figures
    duck = join_lib.join(experiment, tmp / "replay", str(tmp / "labels.parquet"),
                         tmp / "joined", until_ms=until)
    _print("join_duckdb", **duck)
    summary |= {"rows_joined": duck["rows_joined"], "rows_pending": duck["rows_pending"],
                "labels_outside_window": duck["labels_outside_window"],
                "join_seconds_duckdb": duck["seconds"]}
    try:
      spark = join_lib.join(experiment, tmp / "replay", str(tmp / "labels.parquet"),
                            tmp / "joined_spark", engine="spark", until_ms=until)
      order = [("event_id", "ascending"), ("item_key", "ascending")]
      same = (pq.read_table(spark["output"]).sort_by(order).to_pylist()
              == pq.read_table(duck["output"]).sort_by(order).to_pylist())
      summary |= {"join_seconds_spark": spark["seconds"], "spark_equals_duckdb": same}
    except Exception as e:     # noqa: BLE001 - no pyspark or no Java: say so, go on
      summary |= {"join_seconds_spark": None, "spark_equals_duckdb": None,
                  "spark_skipped": f"{type(e).__name__}: {str(e)[:200]}"}
    _print("join_spark", **{k: v for k, v in summary.items() if "spark" in k})
    parity = verify_lib.verify(experiment, tmp / "day1", tmp / "replay")
    summary["parity_max_abs_diff"] = parity["max_abs_diff"]
    _print("verify", **parity)
    steps = max(1, duck["rows_joined"] // experiment.train.batch_size)
    _cli("train", "--config", config, "--workdir", tmp / "day2", "--init_from", tmp / "day1",
         "--no-eval", "--config.train.progress_bar=False",
         f"--config.data.train=({duck['output']!r},)", f"--config.train.steps={steps}")
    traffic.heldout(args.heldout, start_ms + DAY_MS, tmp / "heldout.parquet")
    for day in ("day1", "day2"):
      result = _cli("evaluate", "--config", config, "--workdir", tmp / day,
                    f"--config.data.eval=({str(tmp / 'heldout.parquet')!r},)")
      summary[f"{day}_auc"] = round(_auc(result["eval"]), 4)
    _print("evaluate", day1_auc=summary["day1_auc"], day2_auc=summary["day2_auc"],
           day2_steps=steps)
    if args.scale_rows:
      summary["join_seconds_duckdb_1m_x_1m"] = scale_join(experiment, args.scale_rows, tmp)
    print(json.dumps(summary), flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()

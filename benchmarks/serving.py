"""The ranking service under load: 1 user x 500 candidates, DeepFM, Redis, over HTTP.

  python benchmarks/serving.py [--variant full|smoke] [--requests 1000] [--store URL]

On the synthetic ranking world (configs/synthetic_ranking.py: 35 raw columns read by 38
features, 14 of the user, 16 of the item, 5 of the context): prepares it if absent, trains
DeepFM briefly (`--steps`), starts a redis-server of its own on a free localhost port (unless
`--store` names one) and loads the users and items with `recjax features load`, starts
`recjax serve` in its own process and sends closed-loop `:rank` requests from this one (one
user, 500 random candidates, the context; the user's features fetched by the server):

  p50_ms, p99_ms, qps        concurrency 1, after a warm-up
  qps_concurrency_4          four requests in flight
  per_item_p99_ms            the same requests as 500 full rows through serving_default's
                             :predict (columns assembled here, as an engine fetching the
                             features itself would send them to TF-Serving)
  speedup_vs_per_item        per_item_p99_ms / p99_ms
  floor_p99_ms               the rank signature called in this process as the server holds
                             it (a Session), on arrays made beforehand: no HTTP, no store
  swap_p99_ratio             p99 while a new version is loaded and swapped in / steady p99
  failed_requests            answers other than 200, over all phases

Every phase is bounded by a request count and a time limit; every process started here is
stopped by its pid. Prints one JSON line per phase, then the summary line.
"""

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import aiohttp
import numpy as np
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "synthetic_ranking.py"


def _p(values, q):
  return float(np.percentile(np.asarray(values) * 1000, q))


def _cli(*args, **kwargs):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "recjax.main", *map(str, args)], env=env,
                        capture_output=True, text=True, check=True, cwd=ROOT, **kwargs)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def requests(world, n: int, candidates: int, seed: int = 0) -> list[dict]:
  """`n` rank requests: a random user, `candidates` random items, a random context."""
  rng = np.random.default_rng(seed)
  users = pq.read_table(world["users.parquet"], columns=["user_id"])["user_id"].to_pylist()
  items = pq.read_table(world["items.parquet"], columns=["item_id"])["item_id"].to_pylist()
  log = pq.read_table(world["eval.parquet"], columns=list(CONTEXT)).slice(0, 10_000).to_pylist()
  return [{"user": {"key": users[rng.integers(len(users))]},
           "items": [items[i] for i in rng.choice(len(items), candidates, replace=False)],
           "context": log[rng.integers(len(log))], "top_k": 50} for _ in range(n)]


async def closed_loop(url, bodies, concurrency: int, seconds: float, on_start=None):
  """Sends `bodies` (each once at most) from `concurrency` loops until done or `seconds`
  pass; (latencies of 200 answers, failures, wall seconds)."""
  latencies, failures, queue = [], [], list(reversed(bodies))
  deadline = time.perf_counter() + seconds
  async with aiohttp.ClientSession() as session:
    async def loop():
      while queue and time.perf_counter() < deadline:
        body = queue.pop()
        start = time.perf_counter()
        try:
          async with session.post(url, json=body) as r:
            text = await r.text()
            ok = r.status == 200
            failure = f"{r.status}: {text[:300]}"
        except aiohttp.ClientError as e:
          ok, failure = False, f"{type(e).__name__}: {e}"
        (latencies.append(time.perf_counter() - start) if ok else failures.append(failure))
    start = time.perf_counter()
    if on_start:
      on_start()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return latencies, failures, time.perf_counter() - start


async def per_item_loop(url, store, bodies, experiment, specs, failed) -> list[float]:
  """Per request: fetch the user and the items from the store, send N full rows."""
  user_columns, item_columns = (experiment.serving.user.columns,
                                experiment.serving.item.columns)
  latencies = []
  async with aiohttp.ClientSession() as session:
    for body in bodies:
      start = time.perf_counter()
      (_, [user]), (_, values) = await asyncio.gather(
          store.aget("user", [body["user"]["key"]]), store.aget("item", body["items"]))
      user = dict(zip(user_columns, user))
      rows = [{**user, **body["context"], **dict(zip(item_columns, v))} for v in values]
      columns = {c: [float(r[c]) if s.dtype.name == "float32" else str(r[c]) for r in rows]
                 for c, s in specs.items()}
      async with session.post(url, json={"inputs": columns}) as r:
        await r.read()
        if r.status != 200:
          failed.append(f"{r.status}")
          continue
      latencies.append(time.perf_counter() - start)
  return latencies


def full_rows(world_tables, body, specs) -> dict:
  """The request as N full rows in columns (what TF-Serving would be sent per item)."""
  users, items = world_tables
  user = users[body["user"]["key"]]
  rows = [{**user, **body["context"], **items[k]} for k in body["items"]]
  as_type = {c: float if s.dtype.name == "float32" else str for c, s in specs.items()}
  return {c: [as_type[c](r[c]) for r in rows] for c in specs}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--variant", default="full", choices=("full", "smoke"))
  parser.add_argument("--requests", type=int, default=1000)
  parser.add_argument("--candidates", type=int, default=500)
  parser.add_argument("--steps", type=int, default=200)
  parser.add_argument("--seconds", type=float, default=60, help="limit of each phase")
  parser.add_argument("--store", help="a running Redis (default: one started here)")
  parser.add_argument("--workdir", help="default: a temporary directory (a given one is kept, "
                      "and a second run resumes its training: nothing left to train)")
  parser.add_argument("--swap-only", action="store_true", help="only the steady and the swap "
                      "phases (for trying what a swap costs)")
  args = parser.parse_args()

  from recjax.datasets import synthetic_ranking as world_lib
  from recjax.serve import redis_server
  world = world_lib.prepare_variant(args.variant)
  config = f"{CONFIG}:smoke" if args.variant == "smoke" else str(CONFIG)
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="recjax-serving-"))
  start = time.perf_counter()
  _cli("train", "--config", config, "--workdir", workdir, f"--config.train.steps={args.steps}",
       "--config.train.progress_bar=False", "--no-eval")
  print(json.dumps({"phase": "train", "steps": args.steps,
                    "seconds": round(time.perf_counter() - start, 1)}), flush=True)

  redis = None if args.store else redis_server.RedisServer().start()
  store = args.store or redis.url
  server = None
  try:
    for entity in ("user", "item"):
      loaded = json.loads(_cli("features", "load", "--config", config, "--entity", entity,
                               "--store", store).stdout.strip().splitlines()[-1])
      print(json.dumps({"phase": f"load_{entity}", **{k: loaded[k] for k in
                                                     ("rows", "seconds", "rows_per_s")}}),
            flush=True)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "recjax.main", "serve", "--config", config, "--workdir",
         str(workdir), "--store", store, "--port", str(port),
         "--config.serving.poll_seconds=0.5", "--config.serving.replay.enabled=False"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    started = json.loads(server.stdout.readline())
    summary = run_phases(args, world, workdir, started, config, store)
    summary["store"] = "redis"
    print(json.dumps(summary), flush=True)
  finally:
    if server is not None:
      server.terminate()
      server.wait(timeout=30)
    if redis is not None:
      redis.stop()
    if not args.workdir:
      shutil.rmtree(workdir, ignore_errors=True)


def _wait_ready(url, seconds=120):
  import urllib.request
  deadline = time.time() + seconds
  while time.time() < deadline:
    try:
      with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())
    except OSError:
      time.sleep(0.2)
  raise TimeoutError(f"{url} did not answer in {seconds} s")


def run_phases(args, world, workdir, started, config, store_url) -> dict:
  from recjax import config as config_lib
  from recjax.export import writes
  base_url = started["url"]
  _wait_ready(base_url)
  bodies = requests(world, args.requests + 200, args.candidates)
  warm, bodies = bodies[:100], bodies[100:]
  gc.collect()
  gc.freeze()     # the load generator's own objects (600,000 keys) out of its collector's walk
  rank_url = base_url + ":rank"
  failed = []

  def phase(name, url, bodies, concurrency, on_start=None):
    latencies, failures, wall = asyncio.run(
        closed_loop(url, bodies, concurrency, args.seconds, on_start))
    failed.extend(failures)
    if not latencies:
      raise RuntimeError(f"{name}: every request failed, e.g. {failures[:1]}")
    out = {"phase": name, "requests": len(latencies), "failed": len(failures),
           **({"first_failure": failures[0]} if failures else {}),
           "p50_ms": round(_p(latencies, 50), 2), "p99_ms": round(_p(latencies, 99), 2),
           "qps": round(len(latencies) / wall, 1)}
    print(json.dumps(out), flush=True)
    return out, latencies

  phase("warmup", rank_url, warm, 1)
  steady, _ = phase("rank_c1", rank_url, bodies, 1)
  experiment = config_lib.experiment(config_lib.load(config), "synthetic_ranking")
  base = writes.base_path(experiment, workdir)
  out = {"candidates": args.candidates, "p50_ms": steady["p50_ms"], "p99_ms": steady["p99_ms"],
         "qps": steady["qps"]}
  if not args.swap_only:
    c4, _ = phase("rank_c4", rank_url, bodies, 4)
    per_item, floor = per_item_and_floor(experiment, world, base, bodies[:200], base_url,
                                         store_url, failed)
    out |= {"qps_concurrency_4": c4["qps"], "per_item_p99_ms": per_item,
            "speedup_vs_per_item": round(per_item / steady["p99_ms"], 2),
            "floor_p99_ms": floor}
  # swap: a new version renamed into the base path (as a trainer's export lands) while
  # requests run; the window is the phase, which covers the load and the swap
  version = writes.versions(base)[-1]
  staged = base / f".staged-{version + 1}"
  shutil.copytree(base / str(version), staged)
  swap, _ = phase("rank_c1_swap", rank_url, bodies[: max(200, len(bodies) // 2)], 1,
                  on_start=lambda: staged.rename(base / str(version + 1)))
  status = _wait_ready(base_url)
  return out | {"swap_p99_ratio": round(swap["p99_ms"] / steady["p99_ms"], 2),
                "swapped": status["model_version_status"][0]["version"] == str(version + 1),
                "failed_requests": len(failed), "variant": args.variant}


def per_item_and_floor(experiment, world, base, bodies, base_url, store_url, failed):
  """(per_item_p99_ms, floor_p99_ms). Per item: the same requests as 500 full rows through
  serving_default's :predict, the engine fetching the features from the same store first
  (iQIYI's flow on TF-Serving). Floor: the rank signature called in this process on
  tensors made beforehand."""
  import tensorflow as tf
  from recjax.export import ranking
  from recjax.export import saved_model
  from recjax.export import writes
  from recjax.serve import session_model
  from recjax.serve import store as store_lib
  specs = saved_model.serving_inputs(experiment)
  store = store_lib.open_store(dataclasses.replace(experiment, serving=dataclasses.replace(
      experiment.serving, store=store_url, store_timeout_ms=5000)))
  latencies = asyncio.run(per_item_loop(base_url + ":predict", store, bodies, experiment,
                                        specs, failed))
  per_item = round(_p(latencies, 99), 2)
  print(json.dumps({"phase": "per_item_c1", "requests": len(latencies),
                    "p50_ms": round(_p(latencies, 50), 2), "p99_ms": per_item}), flush=True)
  users = {u["user_id"]: u for u in pq.read_table(world["users.parquet"]).to_pylist()}
  items = {i["item_id"]: i for i in pq.read_table(world["items.parquet"]).to_pylist()}
  _, signatures = session_model.load(base / str(writes.versions(base)[-1]))
  rank = signatures[ranking.SIGNATURE]         # as the server holds it
  one_row, _ = ranking.sides(experiment)
  floor = []
  for b in bodies:
    columns = full_rows((users, items), b, specs)
    feed = {c: np.asarray(v[:1] if c in one_row else v,
                          np.float32 if specs[c].dtype == tf.float32 else object)
            for c, v in columns.items()}
    start = time.perf_counter()
    rank(**feed)
    floor.append(time.perf_counter() - start)
  floor = floor[10:]
  print(json.dumps({"phase": "floor", "p50_ms": round(_p(floor, 50), 2),
                    "p99_ms": round(_p(floor, 99), 2)}), flush=True)
  return per_item, round(_p(floor, 99), 2)


CONTEXT = ("hour", "weekday", "page", "position", "network")

if __name__ == "__main__":
  main()

"""Feature store load rate: 1,000,000 items of 15 raw columns from Parquet into a local Redis.

  python benchmarks/feature_store.py [--rows 1000000] [--batch-rows 50000] [--mset-keys 500]

Starts a throwaway redis-server (recjax.serve.redis_server), writes the items to a temporary
Parquet file (7 float columns, 5 categorical strings, a "a|b|c" tag list, a unicode title,
the key), and loads it twice: the first load into an empty Redis, the second one as a
reload (its summary includes setting the first version's 1,000,000 keys to expire). Then
times reads of 1,000 random candidates (the server's one round trip per request). During
the reload a reader in another process gets 100 random items every millisecond; its
latencies show what a load costs a serving process. Prints one JSON line. Target: rows_per_s >= 150,000 on 2 CPU cores.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recjax import config as config_lib
from recjax.serve import layout as layout_lib
from recjax.serve import loader
from recjax.serve import redis_server
from recjax.serve import store as store_lib

NUMBERS = tuple(f"num{i}" for i in range(7))
CATEGORIES = tuple(f"cat{i}" for i in range(5))
COLUMNS = ("item_id", *NUMBERS, *CATEGORIES, "tags", "title")


def experiment(path: str):
  config = ml_collections.ConfigDict()
  config.data = dict(train=("unused.csv",))
  config.label = dict(column="label")
  config.features = dict(
      user_id=dict(kind="id", hash_bucket_size=1000), item_id=dict(kind="id", hash_bucket_size=1000),
      tags=dict(kind="tag", max_len=5, hash_bucket_size=100),
      title=dict(kind="id", hash_bucket_size=100),
      **{c: dict(kind="numeric") for c in NUMBERS},
      **{c: dict(kind="id", hash_bucket_size=100) for c in CATEGORIES})
  ids = ("user_id", "item_id", "tags", "title", *CATEGORIES)
  config.groups = dict(deep=dict(features=ids, dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  config.serving = dict(user=dict(key="user_id"),
                        item=dict(key="item_id", columns=COLUMNS, files=(path,)))
  return config_lib.experiment(config, "bench")


def items(rows: int, seed: int = 0) -> pa.Table:
  rng = np.random.default_rng(seed)
  columns = {"item_id": pa.array(np.char.add("item", np.arange(rows).astype(str)))}
  for c in NUMBERS:
    columns[c] = pa.array(rng.normal(size=rows).astype(np.float32))
  for i, c in enumerate(CATEGORIES):
    vocabulary = np.array([f"{c}_{k}" for k in range(1000)])
    columns[c] = pa.array(vocabulary[rng.integers(0, 1000, rows)])
  tags = np.array(["a|b|c", "x|y", "long|tag|list|of|words", "solo"])
  columns["tags"] = pa.array(tags[rng.integers(0, len(tags), rows)])
  columns["title"] = pa.array(np.char.add("タイトル ☕ ", rng.integers(0, 10**6, rows).astype(str)))
  return pa.table(columns)


def read_ms(store, rows: int, candidates: int = 1000, repeats: int = 200) -> float:
  """The median time of one get of `candidates` random item keys, in ms."""
  rng = np.random.default_rng(1)
  times = []
  for _ in range(repeats):
    keys = [f"item{i}" for i in rng.integers(0, rows, candidates)]
    start = time.perf_counter()
    store.get("item", keys)
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


# A reader in its own process (no GIL shared with the loader), reading 100 random items a
# millisecond through the store's script until the stop file appears; prints its latencies.
READER = """
import json, os, random, sys, time
import redis
url, script, rows, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
read = redis.Redis.from_url(url).register_script(script)
times = []
while not os.path.exists(stop):
  keys = [f"item{random.randrange(rows)}" for _ in range(100)]
  start = time.perf_counter()
  read(keys=["bench:item:current"], args=["bench:item:", *keys])
  times.append(time.perf_counter() - start)
  time.sleep(0.001)
times.sort()
print(json.dumps({"reads": len(times), "p50_ms": 1000 * times[len(times) // 2],
                  "p99_ms": 1000 * times[int(len(times) * 0.99)], "max_ms": 1000 * times[-1]}))
"""


def reading_while(url: str, rows: int, tmp: str, work) -> tuple:
  """(work(), the reader's latencies while it ran)."""
  stop = pathlib.Path(tmp) / "stop"
  reader = subprocess.Popen([sys.executable, "-c", READER, url, store_lib.READ, str(rows),
                             str(stop)], stdout=subprocess.PIPE, text=True)
  try:
    time.sleep(0.5)                                   # the reader has started reading
    result = work()
  finally:
    stop.touch()
    out, _ = reader.communicate(timeout=60)
  return result, {k: round(v, 2) for k, v in json.loads(out).items()}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rows", type=int, default=1_000_000)
  parser.add_argument("--batch-rows", type=int, default=50_000)
  parser.add_argument("--mset-keys", type=int, default=500)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp, redis_server.RedisServer() as server:
    path = str(pathlib.Path(tmp) / "items.parquet")
    pq.write_table(items(args.rows), path, row_group_size=100_000)
    exp = experiment(path)
    options = dict(url=server.url, batch_rows=args.batch_rows, mset_keys=args.mset_keys)
    first = loader.load(exp, "item", **options)
    again, reads = reading_while(server.url, args.rows, tmp,
                                 lambda: loader.load(exp, "item", **options))
    store = store_lib.RedisStore(server.url, "bench", layout_lib.layouts(exp), timeout_s=5.0)
    print(json.dumps({
        "rows": first["rows"], "columns": len(COLUMNS), "seconds": first["seconds"],
        "rows_per_s": first["rows_per_s"], "reload_seconds": again["seconds"],
        "reload_rows_per_s": again["rows_per_s"], "expired_keys": again["expiring"],
        "retire_seconds": again["retire_seconds"],
        **{f"reload_read_100_{k}": v for k, v in reads.items()},
        "get_1000_ms_p50": round(read_ms(store, args.rows), 2), "target_rows_per_s": 150_000,
        "batch_rows": args.batch_rows, "mset_keys": args.mset_keys}))


if __name__ == "__main__":
  main()

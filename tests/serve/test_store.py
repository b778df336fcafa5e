"""The feature store: packing, loading Parquet into a real Redis, atomic version switches, a
load killed half-way, the embedded store, real-time puts, and the errors a server catches."""

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from recjax.errors import DataError
from recjax.serve import layout as layout_lib
from recjax.serve import loader
from recjax.serve import redis_server
from recjax.serve import store as store_lib
from recjax.serve.errors import LayoutMismatch, StoreError, StoreUnavailable
from tests.conftest import ROOT
from tests.serve import entities


def _redis_store(experiment, url):
  return store_lib.RedisStore(url, experiment.serving.namespace,
                              layout_lib.layouts(experiment), timeout_s=5.0)


def _expected(path, experiment, entity="item") -> dict:
  """The slow, obvious reference: each row of the file, one at a time, as the store's tuple
  (numbers rounded to float32 by numpy, other values as strings, nulls as None)."""
  layout = layout_lib.layouts(experiment)[entity]
  out = {}
  for row in pq.read_table(path).to_pylist():
    out[str(row[layout.key])] = tuple(
        None if row[c] is None else float(np.float32(row[c])) if dtype == "float32"
        else str(row[c]) for c, dtype in zip(layout.columns, layout.dtypes))
  return out


def _get_all(store, keys, entity="item", chunk=2000):
  answers = [store.get(entity, keys[i:i + chunk]) for i in range(0, len(keys), chunk)]
  assert len({version for version, _ in answers}) == 1
  return answers[0][0], [v for _, values in answers for v in values]


def test_pack_keeps_unicode_and_float32_values_exactly():
  values = [0.1, float(np.float32(0.1)), 3.4028234663852886e38, -0.0, 1e-45, "日本語 ☕ é",
            "", "a|b|c", None, float("inf")]
  packed = layout_lib.pack(values)
  back = layout_lib.unpack(packed)
  assert isinstance(back, tuple) and len(back) == len(values)
  as_f32 = [struct.pack("<f", v) if isinstance(v, float) else v for v in values]
  assert [struct.pack("<f", v) if isinstance(v, float) else v for v in back] == as_f32
  assert back[0] == back[1] == float(np.float32(0.1))       # float64 0.1 is stored as float32
  assert struct.pack("<d", back[3]) == struct.pack("<d", -0.0)
  assert back[5:9] == ("日本語 ☕ é", "", "a|b|c", None)
  assert np.isnan(layout_lib.unpack(layout_lib.pack([float("nan")]))[0])
  assert len(layout_lib.pack([1.5, 2.5])) == 1 + 5 + 5        # float32: 5 bytes, not 9


def test_layouts_take_the_signatures_dtype_for_each_column():
  found = layout_lib.layouts(entities.experiment())
  assert found["item"] == layout_lib.Layout(
      "item", "item_id", entities.ITEM_COLUMNS,
      ("string", "float32", "string", "string", "string", "float32"))
  assert found["user"].dtypes == ("float32", "string")
  keys = layout_lib.Keys("shop", "item")
  assert (keys.current, keys.prefix("3") + "layout", keys.layout("3")) == (
      "shop:item:current", "shop:item:3:layout", "shop:item:layout:3")


def test_load_then_get_equals_the_parquet_rows(tmp_path, redis_url):
  paths = [entities.write(entities.items(30_000, first=0), tmp_path / "a.parquet"),
           entities.write(entities.items(20_000, first=30_000, seed=1), tmp_path / "b.parquet")]
  experiment = entities.experiment(paths, namespace="rows")
  summary = loader.load(experiment, "item", url=redis_url, batch_rows=7_000)
  assert {k: summary[k] for k in ("entity", "version", "previous", "rows", "expiring")} == {
      "entity": "item", "version": "1", "previous": None, "rows": 50_000, "expiring": 0}
  expected = _expected(paths[0], experiment) | _expected(paths[1], experiment)
  keys = list(expected)
  store = _redis_store(experiment, redis_url)
  version, values = _get_all(store, keys)
  assert version == "1" and values == [expected[k] for k in keys]
  version, values = store.get("item", ["item7", "nope", "item49999", "", "item7"])
  assert values == [expected["item7"], None, expected["item49999"], None, expected["item7"]]
  assert store.get("item", []) == ("1", [])
  assert store.get("user", ["u1"]) == (None, [None])          # never loaded
  with pytest.raises(StoreError, match="NUL"):                # the keys' separator on the wire
    store.get("item", ["item7", "item\0x"])


def test_embedded_and_redis_stores_give_the_same_answers(tmp_path, redis_url):
  path = entities.write(entities.items(5_000), tmp_path / "items.parquet")
  experiment = entities.experiment([path], namespace="same")
  loader.load(experiment, "item", url=redis_url)
  keys = [f"item{i}" for i in range(0, 5_200, 7)] + ["", "item-1"]
  embedded, remote = store_lib.EmbeddedStore(experiment), _redis_store(experiment, redis_url)
  assert embedded.get("item", keys)[1] == remote.get("item", keys)[1]
  assert embedded.get("item", keys)[0] == store_lib.EMBEDDED

  async def both():
    return await embedded.aget("item", keys), await remote.aget("item", keys)

  (_, from_embedded), (version, from_redis) = asyncio.run(both())
  assert version == "1" and from_embedded == from_redis == remote.get("item", keys)[1]
  assert asyncio.run(remote.aget("item", keys)) == remote.get("item", keys)   # a second loop
  assert embedded.get("user", ["u1"]) == (store_lib.EMBEDDED, [None])
  with pytest.raises(StoreError, match="no entity 'shop'"):
    remote.get("shop", keys)
  assert isinstance(store_lib.open_store(experiment), store_lib.EmbeddedStore)


def test_a_reader_checks_the_stored_layout_against_its_config(tmp_path, redis_url):
  path = entities.write(entities.items(100), tmp_path / "items.parquet")
  loader.load(entities.experiment([path], namespace="layout"), "item", url=redis_url)
  other = layout_lib.Layout("item", "item_id", ("price", "item_id"), ("float32", "string"))
  store = store_lib.RedisStore(redis_url, "layout", {"item": other}, timeout_s=5.0)
  with pytest.raises(LayoutMismatch, match=r"layout:item version 1: the stored layout has "
                     r"columns \['item_id', 'price', .*\(the config has \['price', 'item_id'\]\)"):
    store.get("item", ["item1"])


def _load_in_a_process(path, url, namespace, errors):
  """A load in another process that reports each batch and then pauses, so it can be
  killed part way through; its stderr goes to the file `errors`."""
  code = (
      "import sys, time\n"
      "from recjax.serve import loader\n"
      "from tests.serve import entities\n"
      f"experiment = entities.experiment([{str(path)!r}], namespace={namespace!r})\n"
      "def progress(rows):\n"
      "  print(rows, flush=True)\n"
      "  time.sleep(0.2)\n"
      f"loader.load(experiment, 'item', url={url!r}, batch_rows=1000, progress=progress)\n")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  with open(errors, "w") as stderr:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)


def _raw(client, names, version, keys):
  return client.mget([names.prefix(version) + k for k in keys])


def test_a_killed_load_leaves_the_old_version_serving_and_the_next_load_cleans_up(tmp_path,
                                                                                  redis_url):
  old = entities.write(entities.items(5_000, tag="old"), tmp_path / "old.parquet")
  experiment = entities.experiment([old], namespace="killed")
  loader.load(experiment, "item", url=redis_url)
  client, names = redis.Redis.from_url(redis_url), layout_lib.Keys("killed", "item")
  keys = [f"item{i}" for i in range(5_000)]
  before = _raw(client, names, "1", keys)
  store = _redis_store(experiment, redis_url)
  answer = store.get("item", keys)

  new = entities.write(entities.items(20_000, tag="new"), tmp_path / "new.parquet")
  process = _load_in_a_process(new, redis_url, "killed", tmp_path / "load.err")
  batches = [process.stdout.readline().strip() for _ in range(3)]
  os.kill(process.pid, signal.SIGKILL)
  process.wait()
  assert batches == ["1000", "2000", "3000"], (tmp_path / "load.err").read_text()[-3000:]
  assert client.get(names.current) == b"1" and client.smembers(names.loading) == {b"2"}
  assert _raw(client, names, "1", keys) == before and store.get("item", keys) == answer
  assert client.ttl(names.prefix("1") + "item0") == -1           # not set to expire
  assert len(client.keys(names.prefix("2") + "*")) >= 2000        # the dead load's leftovers

  summary = loader.load(experiment, "item", [new], url=redis_url, grace_s=30)
  assert (summary["version"], summary["previous"], summary["expiring"]) == ("3", "1", 5_000)
  assert client.keys(names.prefix("2") + "*") == [] and not client.exists(names.layout("2"))
  assert client.smembers(names.loading) == set() == client.smembers(names.retired)
  assert 0 < client.ttl(names.prefix("1") + "item0") <= 30 and client.ttl(names.layout("1")) > 0
  version, values = store.get("item", ["item0", "item19999"])
  expected = _expected(new, experiment)
  assert version == "3" and values == [expected["item0"], expected["item19999"]]


def test_a_reader_never_sees_two_versions_in_one_get(tmp_path, redis_url):
  def files(tag):
    return [entities.write(entities.items(20_000, tag=tag), tmp_path / f"{tag}.parquet")]

  experiment = entities.experiment(files("a"), namespace="switch")
  loader.load(experiment, "item", url=redis_url)
  store = _redis_store(experiment, redis_url)
  keys = [f"item{i}" for i in range(0, 20_000, 61)]
  seen, stop = [], threading.Event()

  def read():
    while not stop.is_set():
      version, values = store.get("item", keys)
      seen.append((version, {v[4].rsplit("|", 1)[1] for v in values}))

  reader = threading.Thread(target=read)
  reader.start()
  try:
    for tag in ("b", "c", "d"):
      loader.load(experiment, "item", files(tag), url=redis_url, batch_rows=2_000)
  finally:
    stop.set()
    reader.join()
  assert all(len(tags) == 1 for _, tags in seen)
  by_version = {version: tags for version, tags in seen}
  assert all(by_version[version] == tags for version, tags in seen)
  assert len(by_version) >= 2 and by_version["1"] == {"a"}


def test_put_updates_one_entity_of_the_current_version(tmp_path, redis_url):
  path = entities.write(entities.items(100), tmp_path / "items.parquet")
  experiment = entities.experiment([path], namespace="put")
  loader.load(experiment, "item", url=redis_url)
  store = _redis_store(experiment, redis_url)
  _, (before,) = store.get("item", ["item3"])
  assert store.put("item", "item3", {"price": 1.1, "title": "新しい"}) == "1"
  _, (after, fresh) = store.get("item", ["item3", "fresh"])
  assert after == (before[0], float(np.float32(1.1)), before[2], "新しい", *before[4:])
  assert fresh is None
  store.put("item", "fresh", {"rating": 4})
  assert store.get("item", ["fresh"])[1] == [(None, None, None, None, None, 4.0)]
  with pytest.raises(StoreError, match="no column 'colour'; the item entity stores item_id"):
    store.put("item", "item3", {"colour": "red"})
  loader.load(experiment, "item", url=redis_url)
  assert store.put("item", "item3", {"tags": "x"}) == "2"
  assert store.get("item", ["item3"]) == ("2", [(*before[:4], "x", before[5])])


def test_a_store_that_does_not_answer_raises_store_unavailable(tmp_path):
  experiment = entities.experiment(namespace="down")
  closed = f"redis://127.0.0.1:{redis_server.free_port()}/0"
  with socket.socket() as silent:                     # accepts, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    mute = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    for url in (closed, mute):
      store = store_lib.RedisStore(url, "down", layout_lib.layouts(experiment), timeout_s=0.2)
      with pytest.raises(StoreUnavailable, match=f"the feature store at {url} did not answer"):
        store.get("item", ["item1"])
      with pytest.raises(StoreUnavailable):
        asyncio.run(store.aget("item", ["item1"]))
  path = entities.write(entities.items(10), tmp_path / "items.parquet")
  with pytest.raises(StoreUnavailable):
    loader.load(experiment, "item", [path], url=closed)


def _bad(tmp_path, name, table):
  return entities.write(table, tmp_path / name)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop_columns(["price"]), r"t\.parquet: no column 'price' \(serving\.item"),
    (lambda t: t.set_column(0, "item_id", pa.array(["i0", "i1", None, "i3"])),
     r"t\.parquet, row 3: the key column 'item_id' is null"),
    (lambda t: t.set_column(0, "item_id", pa.array(["i0", "i1", "i2", "i1"])),
     r"t\.parquet, row 4: key 'i1' appears twice"),
    (lambda t: t.set_column(1, "price", pa.array(["1.5", "abc", "2", "3"])),
     r"t\.parquet, row 2: column 'price' cannot be read as float"),
])
def test_bad_files_are_errors_naming_the_file_and_row(tmp_path, redis_url, change, message):
  good = _bad(tmp_path, "good.parquet", entities.items(4))
  bad = _bad(tmp_path, "t.parquet", change(entities.items(4)))
  experiment = entities.experiment([bad], namespace=tmp_path.name)
  loader.load(experiment, "item", [good], url=redis_url)
  with pytest.raises(DataError, match=message):
    loader.load(experiment, "item", url=redis_url, batch_rows=2)
  with pytest.raises(DataError, match=message):
    store_lib.EmbeddedStore(experiment)
  client, names = redis.Redis.from_url(redis_url), layout_lib.Keys(
      experiment.serving.namespace, "item")
  assert client.get(names.current) == b"1" and client.smembers(names.loading) == set()
  assert client.keys(names.prefix("2") + "*") == []


def test_a_key_repeated_across_files_names_the_second_file(tmp_path):
  _bad(tmp_path, "part-0.parquet", entities.items(10))
  _bad(tmp_path, "part-1.parquet", entities.items(10, first=9))
  with pytest.raises(DataError, match=r"part-1\.parquet, row 1: key 'item9' appears twice"):
    store_lib.EmbeddedStore(entities.experiment([tmp_path / "part-*.parquet"]))
  with pytest.raises(DataError, match=r"serving\.item\.files: no file matches '.*nothing-\*'"):
    store_lib.EmbeddedStore(entities.experiment([tmp_path / "nothing-*"]))


def test_redis_server_stops_by_pid_and_a_missing_binary_says_how_to_install(redis_url):
  with redis_server.RedisServer() as server:
    assert redis.Redis.from_url(server.url).ping()
    process = server.process
  assert process.poll() is not None
  with pytest.raises(FileNotFoundError, match="apt-get install -y redis-server"):
    redis_server.RedisServer(binary="no-such-redis-server").start()

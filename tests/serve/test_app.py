"""The server over real HTTP on 127.0.0.1: TF-Serving's REST contract and the :rank endpoint.

Predictions are held to the SavedModel called directly and to `recjax predict` (<= 1e-5);
every malformed request gets 400 with its reason and the server goes on serving; ranking
scores equal `serving_default` on the full rows the store's values make; a store that goes
down mid-test costs defaults and counters, never a failed request.
"""

import asyncio
import csv
import dataclasses
import functools
import gzip
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import jax
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from aiohttp.test_utils import TestClient, TestServer

from recjax import config as config_lib
from recjax.export import ranking
from recjax.export import saved_model
from recjax.export import writes
from recjax.input import synthetic
from recjax.serve import layout
from recjax.serve import loader
from recjax.serve import store as store_lib
from recjax.serve.app import Server
from recjax.serve.redis_server import RedisServer
from recjax.serve import versions as versions_lib
from recjax.train import loop as train
from tests.conftest import ADULT_CONFIG, ROOT, run_cli
from tests.serve import entities

ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                 "occupation", "relationship", "race", "gender", "capital_gain",
                 "capital_loss", "hours_per_week", "native_country")
SMOKE = f"{ROOT / 'configs' / 'synthetic_all_features.py'}:smoke"
USER = ("user", "city", "hist_item", "hist_cat", "age", "user_vec")
ITEM = ("item", "cat", "price", "cat_ctr")


async def _with_client(server: Server, scenario):
  async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
    return await scenario(client)


def _serve(server, scenario):
  return asyncio.run(_with_client(server, scenario))


# --- TF-Serving's REST API on the Adult smoke run -------------------------------------------

@pytest.fixture(scope="module")
def adult(adult_run):
  workdir, _ = adult_run
  experiment = config_lib.experiment(config_lib.load(f"{ADULT_CONFIG}:smoke"), "adult_wide_deep")
  versions = versions_lib.of(experiment, writes.base_path(experiment, workdir))
  assert versions.poll(), versions.errors
  with gzip.open(ROOT / "data" / "adult" / "adult.test.gz", "rt") as f:
    rows = [[v.strip() for v in r] for r in csv.reader(f) if len(r) == 15][:20]
  specs = versions.current.inputs(saved_model.SIGNATURE)
  instances = [{c: float(r[i]) if specs[c].dtype == tf.float32 else r[i]
                for i, c in enumerate(ADULT_COLUMNS)} for r in rows]
  direct = tf.saved_model.load(versions.current.path).signatures[saved_model.SIGNATURE](
      **{c: tf.constant([row[c] for row in instances], specs[c].dtype) for c in specs})
  return experiment, versions, instances, direct[saved_model.OUTPUT].numpy(), workdir, rows


def test_status_metadata_and_predict_in_both_formats(adult):
  experiment, versions, instances, direct, _, _ = adult
  version = versions.current.version

  async def scenario(client):
    out = {}
    r = await client.get("/v1/models/adult_wide_deep")
    out["status"] = (r.status, await r.json())
    r = await client.get("/v1/models/adult_wide_deep/metadata")
    out["metadata"] = await r.json()
    r = await client.post("/v1/models/adult_wide_deep:predict", json={"instances": instances})
    out["rows"] = (r.status, await r.json())
    r = await client.post("/v1/models/adult_wide_deep:predict",
                          json={"instances": instances[:1]})
    out["one"] = await r.json()
    columns = {c: [row[c] for row in instances] for c in instances[0]}
    r = await client.post(f"/v1/models/adult_wide_deep/versions/{version}:predict",
                          json={"signature_name": "serving_default", "inputs": columns})
    out["columns"] = (r.status, await r.json())
    return out

  out = _serve(Server(experiment, versions), scenario)
  assert out["status"] == (200, {"model_version_status": [
      {"version": str(version), "state": "AVAILABLE",
       "status": {"error_code": "OK", "error_message": ""}}]})
  spec = out["metadata"]["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert out["metadata"]["model_spec"] == {"name": "adult_wide_deep", "signature_name": "",
                                           "version": str(version)}
  assert set(spec["inputs"]) == set(ADULT_COLUMNS)
  assert spec["inputs"]["age"]["dtype"] == "DT_FLOAT"
  assert spec["inputs"]["workclass"]["dtype"] == "DT_STRING"
  assert spec["outputs"]["probability"]["tensor_shape"]["dim"][0]["size"] == "-1"
  assert out["rows"][0] == 200 and out["columns"][0] == 200
  np.testing.assert_allclose(out["rows"][1]["predictions"], direct, atol=1e-5, rtol=0)
  np.testing.assert_allclose(out["one"]["predictions"], direct[:1], atol=1e-5, rtol=0)
  np.testing.assert_allclose(out["columns"][1]["outputs"], direct, atol=1e-5, rtol=0)


def test_predict_equals_recjax_predict(adult, tmp_path):
  experiment, versions, instances, _, workdir, rows = adult
  data = tmp_path / "rows.csv"
  with open(data, "w", newline="") as f:        # the Adult files' own format
    csv.writer(f).writerows(rows)
  out = tmp_path / "p.csv"
  run_cli("predict", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir,
          "--input", data, "--output", out)
  expected = np.loadtxt(out, delimiter=",", skiprows=1)

  async def scenario(client):
    r = await client.post("/v1/models/adult_wide_deep:predict", json={"instances": instances})
    return await r.json()

  got = _serve(Server(experiment, versions), scenario)["predictions"]
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


BAD = [
    ("not json", b"{instances: [", "not JSON"),
    ("not an object", b"[1, 2]", "not a JSON object"),
    ("both formats", {"instances": [{}], "inputs": {}}, "exactly one of"),
    ("rows not a list", {"instances": {"age": 1.0}}, "is not a list of rows"),
    ("unknown field", {"instances": [{}], "foo": 1}, "unknown field 'foo'"),
    ("unknown input", {"inputs": {"agee": [1.0]}}, "unknown input 'agee'"),
    ("missing input", "drop age", "missing input 'age'"),
    ("wrong type", "age as text", "input 'age' takes numbers"),
    ("too many rows", "many rows", "the limit is 2000"),
    ("unknown signature", {"signature_name": "nope", "instances": [{}]}, "'nope' is not one of"),
    ("ragged columns", "ragged", "differ in length"),
]


@pytest.mark.parametrize("case,body,reason", BAD, ids=[b[0] for b in BAD])
def test_a_malformed_predict_is_a_400_naming_what_is_wrong(adult, case, body, reason):
  experiment, versions, instances, _, _, _ = adult
  row = instances[0]
  body = {"drop age": {"instances": [{k: v for k, v in row.items() if k != "age"}]},
          "age as text": {"instances": [{**row, "age": "forty"}]},
          "many rows": {"instances": [row] * 2001},
          "ragged": {"inputs": {c: [v] * (2 if c == "age" else 1) for c, v in row.items()}},
          }.get(body, body) if isinstance(body, str) else body

  async def scenario(client):
    kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
    r = await client.post("/v1/models/adult_wide_deep:predict", **kwargs)
    bad = (r.status, await r.json())
    r = await client.post("/v1/models/adult_wide_deep:predict", json={"instances": [row]})
    return bad, r.status                    # and the server goes on serving

  (status, answer), after = _serve(Server(experiment, versions), scenario)
  assert status == 400 and reason in answer["error"], answer
  assert after == 200


def test_unknown_model_or_version_is_a_404_and_an_oversized_body_a_400(adult):
  experiment, versions, instances, _, _, _ = adult
  experiment = dataclasses.replace(experiment, serving=dataclasses.replace(
      experiment.serving, max_request_bytes=1000))

  async def scenario(client):
    out = []
    for path in ("/v1/models/other:predict", "/v1/models/adult_wide_deep/versions/999:predict"):
      r = await client.post(path, json={"instances": instances[:1]})
      out.append((r.status, (await r.json())["error"]))
    r = await client.get("/v1/models/other")
    out.append((r.status, (await r.json())["error"]))
    r = await client.post("/v1/models/adult_wide_deep:predict", json={"instances": instances})
    out.append((r.status, (await r.json())["error"]))
    r = await client.get("/metrics")
    out.append((r.status, await r.text()))
    return out

  out = _serve(Server(experiment, versions), scenario)
  assert [s for s, _ in out[:3]] == [404, 404, 404]
  assert "other" in out[0][1] and "999" in out[1][1]
  assert out[3][0] == 400 and "max_request_bytes" in out[3][1]
  assert out[4][0] == 200
  assert 'recjax_requests_total{code="404",endpoint="predict"} 2.0' in out[4][1]


def test_an_empty_batch_answers_empty_and_exports_are_readable_by_everyone(adult):
  experiment, versions, instances, _, _, _ = adult
  columns = {c: [] for c in instances[0]}

  async def scenario(client):
    out = []
    for body in ({"instances": []}, {"inputs": columns}):
      r = await client.post("/v1/models/adult_wide_deep:predict", json=body)
      out.append((r.status, await r.json()))
    r = await client.post("/v1/models/adult_wide_deep:predict",
                          json={"inputs": {**columns, "age": [30.0]}})
    out.append((r.status, await r.json()))
    return out

  out = _serve(Server(experiment, versions), scenario)
  assert out[0] == (200, {"predictions": []}) and out[1] == (200, {"outputs": []})
  assert out[2][0] == 400 and "differ in length" in out[2][1]["error"]
  root = pathlib.Path(versions.current.path)
  modes = {p.relative_to(root): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")]}
  assert set(modes.values()) <= {0o755, 0o644} and modes[pathlib.Path(".")] == 0o755


# --- :rank on the config with every feature kind --------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """An exported model (version 1, random weights) with user and item entities, their
  Parquet tables (first row of each key in the eval split) and requests to send."""
  root = tmp_path_factory.mktemp("rank_world")
  table = synthetic.generate(config_lib.experiment(config_lib.load(SMOKE)).data.synthetic, "eval")
  files = entities.first_rows(table, (("user", "user", USER), ("item", "item", ITEM)), root)
  config = config_lib.load(SMOKE)
  with config.unlocked():
    config.serving = dict(user=dict(key="user", columns=USER, files=(str(files["user"]),)),
                          item=dict(key="item", columns=ITEM, files=(str(files["item"]),)),
                          defaults=dict(age=38.0))
  experiment = config_lib.experiment(config, "all_features")
  state = train.init_state(experiment, jax.random.key(5))
  base = writes.base_path(experiment, root / "workdir")
  writes.write(experiment, state, base, 1)
  users = pq.read_table(files["user"]).to_pylist()
  items = pq.read_table(files["item"]).to_pylist()
  return experiment, base, {u["user"]: u for u in users}, {i["item"]: i for i in items}


def _versions(experiment, base):
  versions = versions_lib.of(experiment, base)
  assert versions.poll(), versions.errors
  return versions


def _full_rows(experiment, model, user: dict, items: list[dict], context: dict):
  specs = saved_model.serving_inputs(experiment)
  rows = [{**user, **context, **item} for item in items]
  if isinstance(model, str):           # a version's path: the SavedModel loaded by TF itself
    feed = {c: tf.constant([r[c] for r in rows], specs[c].dtype) for c in specs}
    return _saved(model).signatures[saved_model.SIGNATURE](**feed)[saved_model.OUTPUT].numpy()
  feed = {c: [r[c] for r in rows] for c in specs}                     # a served `Loaded`
  return model.signatures[saved_model.SIGNATURE](**feed)[saved_model.OUTPUT]


@functools.cache
def _saved(path):
  return tf.saved_model.load(path)


def _rank_and_compare(experiment, base, store, users, items):
  versions = _versions(experiment, base)
  server = Server(experiment, versions, store)
  user_key = next(iter(users))
  keys = list(items)[:50]
  context = {"tags": "t1:2.0|t7:1.0"}

  async def scenario(client):
    out = {}
    r = await client.post("/v1/models/all_features:rank", json={
        "user": {"key": user_key}, "items": keys, "context": context, "top_k": 10})
    out["fetched"] = (r.status, await r.json())
    features = {c: users[user_key][c] for c in USER[1:]}     # all but the key column
    r = await client.post("/v1/models/all_features:rank", json={
        "user": {"key": user_key, "features": features}, "items": keys, "context": context,
        "event_id": "e-1"})
    out["given"] = (r.status, await r.json())
    return out

  out = _serve(server, scenario)
  expected = _full_rows(experiment, versions.current.path,
                        {c: users[user_key][c] for c in USER}, [items[k] for k in keys], context)
  for name in ("fetched", "given"):
    status, answer = out[name]
    assert status == 200, answer
    scores = {i["key"]: i["score"] for i in answer["items"]}
    want = dict(zip(keys, expected))
    assert max(abs(scores[k] - want[k]) for k in scores) <= 1e-5
    assert [i["key"] for i in answer["items"]] == sorted(scores, key=lambda k: -want[k])
    assert answer["model_version"] == "1"
    assert answer["defaulted"] == {"user": [], "context": [], "items": 0}
  assert len(out["fetched"][1]["items"]) == 10 and len(out["given"][1]["items"]) == 50
  assert out["given"][1]["event_id"] == "e-1" and len(out["fetched"][1]["event_id"]) == 32
  # the first request fetched the user (the counter moved once), the second brought it
  assert server.metrics.value("recjax_user_fallback_fetches_total") == 1
  assert server.metrics.value("recjax_item_cache_total", result="hit") == 50
  return server


def test_rank_equals_serving_default_with_the_embedded_store(world):
  experiment, base, users, items = world
  _rank_and_compare(experiment, base, store_lib.EmbeddedStore(experiment), users, items)


def test_rank_equals_serving_default_with_redis_and_degrades_to_defaults_when_it_stops(world):
  experiment, base, users, items = world
  redis = RedisServer().start()
  try:
    for entity in ("user", "item"):
      loader.load(experiment, entity, url=redis.url)
    store = store_lib.RedisStore(redis.url, experiment.serving.namespace,
                                 layout.layouts(experiment), 0.2)
    server = _rank_and_compare(experiment, base, store, users, items)
  finally:
    redis.stop()
  user_key = list(users)[1]
  keys = list(items)[50:60] + ["no-such-item"]

  async def scenario(client):              # Redis is gone now
    r = await client.post("/v1/models/all_features:rank", json={
        "user": {"key": user_key}, "items": keys, "context": {"tags": ""}})
    return r.status, await r.json()

  status, answer = _serve(server, scenario)
  assert status == 200, answer
  assert answer["defaulted"] == {"user": sorted(USER[1:]), "context": [], "items": len(keys)}
  assert {i["key"] for i in answer["items"]} == set(keys)
  assert server.metrics.value("recjax_store_errors_total") == 2      # user and items
  assert server.metrics.value("recjax_defaulted_values_total",
                              reason="store_unavailable") == len(USER) - 1 + len(keys)


def test_rank_serves_a_missing_item_and_missing_context_with_defaults(world):
  experiment, base, users, items = world
  server = Server(experiment, _versions(experiment, base), store_lib.EmbeddedStore(experiment))
  user_key = next(iter(users))

  async def scenario(client):
    r = await client.post("/v1/models/all_features:rank", json={
        "user": {"key": user_key}, "items": [next(iter(items)), "i-unknown"]})
    return r.status, await r.json()

  status, answer = _serve(server, scenario)
  assert status == 200 and answer["defaulted"] == {"user": [], "context": ["tags"], "items": 1}
  assert server.metrics.value("recjax_defaulted_values_total", reason="missing_entity") == 1
  assert server.metrics.value("recjax_defaulted_values_total", reason="missing_context") == 1


RANK_BAD = [
    ({"items": ["a"]}, "user: expected"),
    ({"user": {"key": "1"}, "items": []}, "items: expected a non-empty list"),
    ({"user": {"key": "1"}, "items": ["a"] * 2001}, "the limit is 2000"),
    ({"user": {"key": "1"}, "items": [1.5]}, "items[0]"),
    ({"user": {"key": "1"}, "items": ["a", "b\0c"]}, "items[1]: an item key is a string (with"),
    ({"user": {"key": "u\0"}, "items": ["a"]}, "user: expected"),
    ({"user": {"key": "1", "features": {"price": 1.0}}, "items": ["a"]},
     "user.features: unknown column 'price'"),
    ({"user": {"key": "1", "features": {"age": "old"}}, "items": ["a"]},
     "user.features.age: expected a number"),
    ({"user": {"key": "1"}, "items": ["a"], "context": {"tags": 3.5}}, "context.tags"),
    ({"user": {"key": "1"}, "items": ["a"], "top_k": 0}, "top_k"),
    ({"user": {"key": "1"}, "items": ["a"], "userr": 1}, "unknown field 'userr'"),
]


@pytest.mark.parametrize("body,reason", RANK_BAD, ids=[r for _, r in RANK_BAD])
def test_a_malformed_rank_request_is_a_400_naming_the_field(world, body, reason):
  experiment, base, _, _ = world
  server = Server(experiment, _versions(experiment, base), store_lib.EmbeddedStore(experiment))

  async def scenario(client):
    r = await client.post("/v1/models/all_features:rank", json=body)
    return r.status, await r.json()

  status, answer = _serve(server, scenario)
  assert status == 400 and reason in answer["error"], answer


def test_a_new_version_is_swapped_in_and_a_request_in_flight_keeps_its_own(world, tmp_path):
  experiment, base, users, items = world
  copy = tmp_path / "base"
  shutil.copytree(base, copy)
  versions = _versions(experiment, copy)
  held = versions.current                    # what a request in flight holds
  user, three = next(iter(users.values())), list(items.values())[:3]
  before = _full_rows(experiment, held, user, three, {"tags": ""})
  state = train.init_state(experiment, jax.random.key(6))
  writes.write(experiment, state, copy, 2)
  assert versions.poll() and versions.current.version == 2 and versions.loads == 2
  assert not versions.poll()                 # nothing newer
  server = Server(experiment, versions, store_lib.EmbeddedStore(experiment))

  async def scenario(client):
    r = await client.post("/v1/models/all_features:rank", json={
        "user": {"key": next(iter(users))}, "items": list(items)[:5]})
    return await r.json()

  assert _serve(server, scenario)["model_version"] == "2"
  assert versions.served == {ranking.SIGNATURE: {8}}    # 5 candidates: bucket 8, warmed next
  # the old version still answers its holder, as it did before the swap
  assert held is not versions.current and before.shape == (3,)
  np.testing.assert_array_equal(_full_rows(experiment, held, user, three, {"tags": ""}),
                                before)


def test_recjax_serve_command_answers_over_http(adult_run):
  workdir, _ = adult_run
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  process = subprocess.Popen(
      [sys.executable, "-m", "recjax.main", "serve", "--config", f"{ADULT_CONFIG}:smoke",
       "--workdir", str(workdir), "--port", str(port)], stdout=subprocess.PIPE, text=True,
      cwd=ROOT)
  try:
    started = json.loads(process.stdout.readline())
    assert started["url"] == f"http://127.0.0.1:{port}/v1/models/adult_wide_deep"
    deadline = time.time() + 60
    while True:
      try:
        with urllib.request.urlopen(started["url"], timeout=5) as r:
          status = json.loads(r.read())
        break
      except OSError:
        assert time.time() < deadline, "the server did not answer within 60 s"
        time.sleep(0.2)
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
  finally:
    process.terminate()
    process.wait(timeout=30)


def test_a_reload_of_the_items_reaches_requests_whose_items_are_all_cached(world, redis_url,
                                                                            tmp_path):
  experiment, base, users, items = world
  experiment = dataclasses.replace(experiment, serving=dataclasses.replace(
      experiment.serving, poll_seconds=0.01, store=redis_url))
  for entity in ("user", "item"):
    loader.load(experiment, entity, url=redis_url)
  store = store_lib.open_store(experiment)
  server = Server(experiment, _versions(experiment, base), store)
  keys = list(items)[:20]
  body = {"user": {"key": next(iter(users))}, "items": keys, "context": {"tags": ""}}
  changed = pq.read_table(experiment.serving.item.files[0])
  changed = changed.set_column(changed.schema.get_field_index("price"), "price",
                               pa.array(np.full(changed.num_rows, 77.0, np.float32)))
  pq.write_table(changed, tmp_path / "items_v2.parquet")

  async def scenario(client):
    first = await (await client.post("/v1/models/all_features:rank", json=body)).json()
    loader.load(experiment, "item", [str(tmp_path / "items_v2.parquet")], redis_url)
    await asyncio.sleep(0.05)
    second = await (await client.post("/v1/models/all_features:rank", json=body)).json()
    return first, second

  first, second = _serve(server, scenario)
  user = {c: users[body["user"]["key"]][c] for c in USER}
  for answer, price in ((first, None), (second, 77.0)):
    rows = [{**items[k], **({"price": price} if price else {})} for k in keys]
    want = dict(zip(keys, _full_rows(experiment, str(base / "1"), user, rows, {"tags": ""})))
    assert max(abs(i["score"] - want[i["key"]]) for i in answer["items"]) <= 1e-5
  assert server.metrics.value("recjax_item_cache_total", result="hit") == 20   # 2nd: all hits


def test_the_rank_signature_through_predict_takes_columns_of_two_lengths(world):
  experiment, base, users, items = world
  server = Server(experiment, _versions(experiment, base), store_lib.EmbeddedStore(experiment))
  user, keys = next(iter(users.values())), list(items)[:9]
  one_row, item_columns = ranking.sides(experiment)
  context = {"tags": "t2:1.0"}
  inputs = {c: [{**user, **context}[c]] for c in one_row}
  inputs |= {c: [items[k][c] for k in keys] for c in item_columns}

  async def scenario(client):
    r = await client.post("/v1/models/all_features:predict",
                          json={"signature_name": "rank", "inputs": inputs})
    good = (r.status, await r.json())
    bad = dict(inputs, age=[1.0, 2.0])       # a user column of two rows
    r = await client.post("/v1/models/all_features:predict",
                          json={"signature_name": "rank", "inputs": bad})
    return good, (r.status, await r.json())

  (status, answer), (bad_status, bad) = _serve(server, scenario)
  expected = _full_rows(experiment, str(base / "1"), {c: user[c] for c in USER},
                        [items[k] for k in keys], context)
  assert status == 200
  np.testing.assert_allclose(answer["outputs"], expected, atol=1e-5, rtol=0)
  assert bad_status == 400 and "'age' is of the user or the context" in bad["error"]


def test_spaces_around_a_string_score_as_training_read_them(adult):
  """data.strip_whitespace: the CSV reader trims " Male"; the SavedModel trims it too."""
  experiment, versions, instances, direct, _, _ = adult
  assert experiment.data.strip_whitespace
  specs = versions.current.inputs(saved_model.SIGNATURE)
  padded = [{c: f"  {v} " if specs[c].dtype == tf.string else v for c, v in row.items()}
            for row in instances]
  serve = tf.saved_model.load(versions.current.path).signatures[saved_model.SIGNATURE]
  scores = serve(**{c: tf.constant([row[c] for row in padded], specs[c].dtype)
                    for c in specs})[saved_model.OUTPUT].numpy()
  np.testing.assert_allclose(scores, direct, atol=1e-6)

"""The replay loop on a served model: the ranking service logs exactly what it scored, the
log re-scores to the same values (SavedModel and JAX), coverage names the one feature the
store stopped serving, and a killed server's losses are counted when it restarts."""

import asyncio
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp.test_utils import TestClient, TestServer

from recjax.errors import DataError
from recjax.export import writes
from recjax.replay import coverage as coverage_lib
from recjax.replay import verify as verify_lib
from recjax.replay import writer as writer_lib
from recjax.serve import store as store_lib
from recjax.serve import versions as versions_lib
from recjax.serve.app import Server
from tests.conftest import ROOT, run_cli, summary_of
from tests.replay.conftest import SMOKE, experiment, requests


def _serve_and_log(experiment_, workdir, bodies, replay_dir, store=None, clock=time.time):
  """Sends `bodies` to an in-process server logging to `replay_dir` (the writer reading
  `clock`); the answers, the writer, the server."""
  versions = versions_lib.of(experiment_, writes.base_path(experiment_, workdir))
  assert versions.poll(), versions.errors
  replay = writer_lib.open_writer(experiment_, workdir, replay_dir, clock)
  server = Server(experiment_, versions, store or store_lib.EmbeddedStore(experiment_),
                  replay=replay)

  async def scenario():
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
      answers = []
      for body in bodies:
        r = await client.post("/v1/models/synthetic_ranking:rank", json=body)
        assert r.status == 200, await r.text()
        answers.append(await r.json())
      return answers

  answers = asyncio.run(scenario())
  replay.close()
  return answers, replay, server


def test_the_log_holds_what_was_scored_and_re_scores_to_it(ranking_run, tmp_path):
  workdir, files = ranking_run
  exp = experiment()
  bodies = requests(files, 30)
  bodies[3]["items"].append("no-such-item")                    # served with defaults
  bodies[4]["context"].pop("page")                              # a missing context value
  answers, replay, server = _serve_and_log(exp, workdir, bodies, tmp_path / "replay")
  log = pq.read_table(writer_lib.parts(tmp_path / "replay")[0]).to_pylist()
  assert len(log) == sum(len(b["items"]) for b in bodies) == replay.rows_written
  users = {u["user_id"]: u for u in pq.read_table(files["users.parquet"]).to_pylist()}
  items = {i["item_id"]: i for i in pq.read_table(files["items.parquet"]).to_pylist()}
  rows = iter(log)
  for body, answer in zip(bodies, answers):
    scores = {i["key"]: i["score"] for i in answer["items"]}
    for position, key in enumerate(body["items"]):
      row = next(rows)
      assert (row["event_id"], row["item_key"], row["candidate"]) == (
          body["event_id"], key, position)
      assert row["model_version"] == int(answer["model_version"])
      assert abs(row["score"] - scores[key]) <= 1e-7
      user = users[body["user"]["key"]]
      for column in ("gender", "city", "hist_items", "income"):
        assert row[column] == pytest.approx(user[column]) if column == "income" else (
            row[column] == user[column])
      if key in items:
        assert row["brand"] == items[key]["brand"] and row["defaulted"] == (
            ["page"] if body is bodies[4] else [])
        assert row["price"] == pytest.approx(items[key]["price"])
      else:
        assert "brand" in row["defaulted"] and "missing_entity" in row["defaulted_reason"]
      for column, value in body["context"].items():
        assert row[column] == str(value)
  assert server.metrics.value("recjax_replay", count="rows_written") == len(log)
  summary = verify_lib.verify(exp, workdir, tmp_path / "replay")
  assert summary["rows"] == len(log) and summary["versions"] == [80]
  assert summary["max_abs_diff"] <= 1e-5, summary
  # the command line: a click on the first item of each of two events, joined by event id
  first = [r for r in log if r["candidate"] == 0][:2]
  pq.write_table(pa.table({"event_id": [r["event_id"] for r in first],
                           "item_key": [r["item_key"] for r in first],
                           "at_ms": [r["served_at_ms"] + 1000 for r in first],
                           "click": [1.0, 1.0]}), tmp_path / "clicks.parquet")
  joined = summary_of(run_cli("replay", "join", "--config", SMOKE, "--replay",
                              tmp_path / "replay", "--labels", tmp_path / "clicks.parquet",
                              "--output", tmp_path / "joined",
                              f"--until-ms={max(r['served_at_ms'] for r in log) + 1_800_000}"))
  assert joined["rows_joined"] == len(log) and joined["labels_joined"] == 2
  clicked = pq.read_table(joined["output"]).to_pylist()
  assert sorted((r["event_id"], r["item_key"]) for r in clicked if r["click"] == 1.0) == sorted(
      (r["event_id"], r["item_key"]) for r in first)
  checked = summary_of(run_cli("replay", "verify", "--config", SMOKE, "--workdir", workdir,
                               "--replay", tmp_path / "replay"))
  assert checked["max_abs_diff"] <= 1e-5 and checked["rows"] == len(log)
  # the same log judged by a training pipeline whose ctr_7d transform changed: named events
  changed = dataclasses.replace(exp, features=tuple(
      dataclasses.replace(f, mean=f.mean + 1.0) if f.name == "ctr_7d" else f
      for f in exp.features))
  with pytest.raises(DataError, match=r"events: ev-\d+"):
    verify_lib.verify(changed, workdir, tmp_path / "replay")


class _StopsServing:
  """The embedded store, but after `after` item fetches it answers one column empty (a
  feature pipeline that stopped filling it), as a store left half-loaded would."""

  def __init__(self, store, experiment_, column: str, after: int):
    self.store, self.after, self.calls = store, after, 0
    self.index = experiment_.serving.item.columns.index(column)

  async def aget(self, entity, keys):
    version, values = await self.store.aget(entity, keys)
    if entity == "item":
      self.calls += 1
      if self.calls > self.after:
        values = [None if v is None else v[:self.index] + ("",) + v[self.index + 1:]
                  for v in values]
    return version + ("-blank" if entity == "item" and self.calls > self.after else ""), values


def test_coverage_alarms_for_the_feature_the_store_stopped_serving_and_no_other(ranking_run,
                                                                                tmp_path):
  workdir, files = ranking_run
  exp = experiment(coverage_window_s=6.0, min_present=0.8, max_psi=0.5)
  store = _StopsServing(store_lib.EmbeddedStore(exp), exp, "brand", after=120)
  bodies = requests(files, 240, candidates=10, split="train")   # traffic like training's
  ticks = itertools.count()               # 0.05 s a request: a 6 s window holds 120

  _serve_and_log(exp, workdir, bodies, tmp_path / "replay", store,
                 clock=lambda: 1.8e9 + next(ticks) * 0.05)
  report = coverage_lib.compute(exp, tmp_path / "replay")
  assert {a["column"] for a in report["alarms"]} == {"brand"}
  first, last = report["windows"][0], report["windows"][-1]
  assert first["columns"]["brand"]["present"] == 1.0
  assert last["columns"]["brand"] == {**last["columns"]["brand"], "present": 0.0, "empty": 1.0}
  assert all(w["columns"]["city"]["present"] == 1.0 for w in report["windows"])
  result = run_cli("replay", "coverage", "--config", SMOKE, "--replay", tmp_path / "replay",
                   "--output", tmp_path / "report.json", "--plot", tmp_path / "coverage.png",
                   "--config.serving.replay.coverage_window_s=6.0",
                   "--config.serving.replay.min_present=0.8",
                   "--config.serving.replay.max_psi=0.5", check=False)
  assert result.returncode == coverage_lib.ALARM_STATUS, result.stderr[-2000:]
  assert "recjax: alarm: brand: window at" in result.stdout
  assert "alarm: city" not in result.stdout
  assert (tmp_path / "coverage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((tmp_path / "report.json").read_text())["alarms"][0]["column"] == "brand"


def _start_server(workdir, port, replay_dir):
  process = subprocess.Popen(
      [sys.executable, "-m", "recjax.main", "serve", "--config", SMOKE, "--workdir",
       str(workdir), "--port", str(port), "--config.serving.replay.flush_seconds=0.5",
       f"--config.serving.replay.dir={replay_dir}"],
      stdout=subprocess.PIPE, text=True, cwd=ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  started = json.loads(process.stdout.readline())
  deadline = time.time() + 120
  while True:
    try:
      with urllib.request.urlopen(started["url"], timeout=5):
        return process, started
    except OSError:
      assert time.time() < deadline, "the server did not answer within 120 s"
      time.sleep(0.2)


def test_a_server_killed_mid_traffic_leaves_readable_parts_and_counts_its_losses(
    ranking_run, tmp_path):
  workdir, files = ranking_run
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  replay_dir = tmp_path / "replay"
  process, started = _start_server(workdir, port, replay_dir)
  answered = []                                     # (time, rows) of each answered request
  try:
    for body in requests(files, 400, candidates=10):
      request = urllib.request.Request(started["url"] + ":rank", json.dumps(body).encode(),
                                       {"Content-Type": "application/json"})
      with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200
      answered.append((time.monotonic(), len(body["items"])))
      if len(answered) == 100:                    # a first part is flushed (0.5 s) ...
        deadline = time.monotonic() + 30
        while not writer_lib.parts(replay_dir) and time.monotonic() < deadline:
          time.sleep(0.05)
      if len(answered) == 150:                    # ... and rows are buffered after it
        killed_at = time.monotonic()
        process.send_signal(signal.SIGKILL)         # mid-traffic: no flush, no cleanup
        break
  finally:
    process.kill()
    process.wait(timeout=30)
  sent = sum(n for _, n in answered)
  written = sum(pq.read_table(p).num_rows for p in writer_lib.parts(replay_dir))  # readable
  recent = sum(n for t, n in answered if t > killed_at - 0.5 - 1.0)   # the flush bound + 1 s
  assert 0 < written <= sent and sent - written <= recent
  process, restarted = _start_server(workdir, port, replay_dir)
  try:
    assert restarted["replay_rows_lost"] == sent - written
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
      text = r.read().decode()
    assert f'recjax_replay{{count="rows_lost"}} {float(sent - written)}' in text
  finally:
    process.terminate()
    process.wait(timeout=30)
  assert not list(replay_dir.glob(".tmp-*"))

"""The replay loop on a served model: the ranking service logs exactly what it scored, the
log re-scores to the same values (SavedModel and JAX), coverage names the one feature the
store stopped serving, and a killed server's losses are counted when it restarts."""

import asyncio
import concurrent.futures
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
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
from tests.conftest import ROOT, run_cli
from tests.replay.conftest import SMOKE, experiment, requests


def _serve_and_log(experiment_, workdir, bodies, replay_dir, store=None):
  """Sends `bodies` to an in-process server logging to `replay_dir`; the answers."""
  versions = versions_lib.of(experiment_, writes.base_path(experiment_, workdir))
  assert versions.poll(), versions.errors
  replay = writer_lib.open_writer(
      dataclasses.replace(experiment_, serving=dataclasses.replace(
          experiment_.serving, replay=dataclasses.replace(experiment_.serving.replay,
                                                          dir=str(replay_dir)))), workdir)
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
  # the same log judged by a training pipeline whose price transform changed: named events
  changed = dataclasses.replace(exp, features=tuple(
      dataclasses.replace(f, mean=f.mean + 1.0) if f.name == "ctr_7d" else f
      for f in exp.features))
  with pytest.raises(DataError, match=r"events: ev-\d+"):
    verify_lib.verify(changed, workdir, tmp_path / "replay")

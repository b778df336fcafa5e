"""Parity on a sequence model: DIN (target attention over the user's item history) trained
briefly, served with a replay log, and every logged score re-scored by the SavedModel and
by JAX through the training pipeline, within 1e-5."""

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from recjax import config as config_lib
from recjax.errors import DataError
from recjax.export import writes
from recjax.input import synthetic
from recjax.replay import verify as verify_lib
from recjax.replay import writer as writer_lib
from recjax.serve import store as store_lib
from recjax.serve import versions as versions_lib
from recjax.serve.app import Server
from recjax.train import loop as train
from tests.conftest import ROOT
from tests.serve import entities

DIN = f"{ROOT / 'configs' / 'synthetic_din.py'}:din,smoke"
USER = ("user", "hist_item", "hist_cat", "user_vec")
ITEM = ("item", "cat", "price", "cat_ctr")


def test_din_scores_in_the_replay_log_re_score_within_1e_5(tmp_path):
  table = synthetic.generate(config_lib.experiment(config_lib.load(DIN)).data.synthetic, "eval")
  files = entities.first_rows(table, (("user", "user", USER), ("item", "item", ITEM)),
                              tmp_path)
  config = config_lib.load(DIN)
  with config.unlocked():
    config.serving = dict(user=dict(key="user", columns=USER, files=(str(files["user"]),)),
                          item=dict(key="item", columns=ITEM, files=(str(files["item"]),)),
                          replay=dict(dir=str(tmp_path / "replay")))
  experiment = config_lib.experiment(config, "synthetic_din")
  workdir = tmp_path / "workdir"
  train.train_and_evaluate(experiment, workdir, run_eval=False)
  versions = versions_lib.of(experiment, writes.base_path(experiment, workdir))
  assert versions.poll(), versions.errors
  replay = writer_lib.open_writer(experiment, workdir)
  server = Server(experiment, versions, store_lib.EmbeddedStore(experiment), replay=replay)
  rows = table.slice(0, 400).to_pylist()

  async def scenario():
    async with TestClient(TestServer(server.app(), host="127.0.0.1")) as client:
      for j in range(0, 400, 40):
        body = {"user": {"key": str(rows[j]["user"])},
                "items": list(dict.fromkeys(r["item"] for r in rows[j:j + 40])),
                "context": {"tags": rows[j]["tags"]}, "event_id": f"din-{j}"}
        r = await client.post("/v1/models/synthetic_din:rank", json=body)
        assert r.status == 200, await r.text()

  asyncio.run(scenario())
  replay.close()
  result = verify_lib.verify(experiment, workdir, tmp_path / "replay")
  assert result["versions"] == [experiment.train.steps] and result["rows"] == replay.rows_written
  assert result["max_abs_diff"] <= 1e-5, result
  # a checkpoint that no longer matches the served export: named events
  import dataclasses
  changed = dataclasses.replace(experiment, features=tuple(
      dataclasses.replace(f, log1p=False) if f.name == "price" else f
      for f in experiment.features))
  with pytest.raises(DataError, match=r"events: din-\d+"):
    verify_lib.verify(changed, workdir, tmp_path / "replay")

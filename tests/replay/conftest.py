"""One smoke training run of the synthetic ranking world (DeepFM, 80 steps: a checkpoint and
an export at step 80), and rank requests drawn from its eval impressions."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from recjax import config as config_lib
from recjax.datasets import synthetic_ranking as world
from tests.conftest import ROOT, run_cli

SMOKE = f"{ROOT / 'configs' / 'synthetic_ranking.py'}:smoke"
CONTEXT = world.CONTEXT_COLUMNS


@pytest.fixture(scope="session")
def ranking_run(tmp_path_factory):
  files = world.prepare_variant("smoke")
  workdir = tmp_path_factory.mktemp("ranking_smoke")
  run_cli("train", "--config", SMOKE, "--workdir", workdir, "--config.train.progress_bar=False",
          "--no-eval")
  return workdir, files


def experiment(**replay):
  config = config_lib.load(SMOKE)
  with config.unlocked():
    config.serving.replay.update(replay)
  return config_lib.experiment(config, "synthetic_ranking")


def requests(files, n: int, candidates: int = 20, seed: int = 0,
             split: str = "eval") -> list[dict]:
  """`n` rank requests of random impressions of `split` (the log is sorted by time; these
  are spread over it): one's user and context, the items of it and of `candidates` - 1
  others. (Eval's days follow train's: its weekdays are not train's.)"""
  log = pq.read_table(files[f"{split}.parquet"]).to_pylist()
  order = np.random.default_rng(seed).permutation(len(log))[:n * candidates]
  out = []
  for j in range(n):
    rows = [log[i] for i in order[j * candidates:(j + 1) * candidates]]
    out.append({"user": {"key": rows[0]["user_id"]},
                "items": list(dict.fromkeys(r["item_id"] for r in rows)),
                "context": {c: rows[0][c] for c in CONTEXT}, "event_id": f"ev-{seed}-{j}"})
  return out

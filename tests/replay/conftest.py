"""One smoke training run of the synthetic ranking world (DeepFM, 80 steps: a checkpoint and
an export at step 80), and rank requests drawn from its eval impressions."""

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
  for key, value in replay.items():
    config.serving.replay[key] = value
  return config_lib.experiment(config, "synthetic_ranking")


def requests(files, n: int, candidates: int = 20, first: int = 0) -> list[dict]:
  """Rank requests of eval impressions: impression j's user and context, and the items of
  the `candidates` impressions from j on."""
  log = pq.read_table(files["eval.parquet"]).slice(first, n * candidates).to_pylist()
  out = []
  for j in range(0, len(log) - candidates + 1, candidates):
    rows = log[j:j + candidates]
    out.append({"user": {"key": rows[0]["user_id"]},
                "items": list(dict.fromkeys(r["item_id"] for r in rows)),
                "context": {c: rows[0][c] for c in CONTEXT}, "event_id": f"ev-{first + j}"})
  return out

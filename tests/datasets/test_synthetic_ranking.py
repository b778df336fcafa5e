"""recjax/datasets/synthetic_ranking.py and configs/synthetic_ranking.py: the ranking world.

The files are written from a seed, so two writes are byte-identical; an impression's user
and item columns are its entities' rows unchanged (what the serving path assembles from
the store); the click rate is in range; and the smoke config learns the teacher end to end.
"""

import hashlib
import json
import os

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recjax import config as config_lib
from recjax.datasets import paths
from recjax.datasets import synthetic_ranking as world
from tests.conftest import ROOT, run_cli, summary_of

CONFIG = ROOT / "configs" / "synthetic_ranking.py"


@pytest.fixture
def smoke(tmp_path, monkeypatch):
  """The smoke variant written under a fresh RECJAX_PREPARED: {file name: path}."""
  monkeypatch.setenv(paths.PREPARED_ENV, str(tmp_path / "prepared"))
  return world.prepare_variant("smoke")


def _digests(files: dict) -> dict:
  return {name: hashlib.sha256(open(path, "rb").read()).hexdigest()
          for name, path in files.items()}


def _mtimes(files: dict) -> dict:
  return {name: os.stat(path).st_mtime_ns for name, path in files.items()}


def test_the_same_seed_writes_identical_files_and_a_second_call_is_a_no_op(
    smoke, tmp_path, monkeypatch):
  first, written = _digests(smoke), _mtimes(smoke)
  assert world.prepare_variant("smoke") == smoke          # same parameters: nothing written
  assert _mtimes(smoke) == written
  monkeypatch.setenv(paths.PREPARED_ENV, str(tmp_path / "again"))
  again = world.prepare_variant("smoke", source="/no/such/folder")    # source is unused
  assert again != smoke and _digests(again) == first
  with pytest.raises(ValueError, match="variant 'tiny'"):
    world.prepare_variant("tiny")


def test_schemas_keys_and_time_order(smoke):
  users, items = pq.read_table(smoke["users.parquet"]), pq.read_table(smoke["items.parquet"])
  train, evals = pq.read_table(smoke["train.parquet"]), pq.read_table(smoke["eval.parquet"])
  assert users.column_names == ["user_id", *world.USER_COLUMNS]
  assert items.column_names == ["item_id", *world.ITEM_COLUMNS]
  assert train.column_names == evals.column_names == list(world.LOG_COLUMNS)
  sizes = world.VARIANTS["smoke"]
  assert (users.num_rows, items.num_rows, train.num_rows, evals.num_rows) == (
      sizes["users"], sizes["items"], sizes["train_rows"], sizes["eval_rows"])
  for table, key in ((users, "user_id"), (items, "item_id")):
    assert pc.count_distinct(table[key]).as_py() == table.num_rows
  events = train["event_id"].to_pylist() + evals["event_id"].to_pylist()
  assert len(set(events)) == len(events)
  for split in (train, evals):
    assert np.all(np.diff(split["timestamp"].to_numpy()) >= 0)
  assert pc.min(evals["timestamp"]).as_py() > pc.max(train["timestamp"]).as_py()
  # the multi-value columns: 1..MAX_LIKED liked categories, up to MAX_HISTORY items
  liked = pc.list_value_length(pc.split_pattern(users["liked_categories"], "|")).to_numpy()
  assert liked.min() >= 1 and liked.max() <= world.MAX_LIKED
  history = users["hist_items"].to_pylist()
  assert all(len(h.split("|")) <= world.MAX_HISTORY for h in history if h)
  assert set(i for h in history if h for i in h.split("|")) <= set(items["item_id"].to_pylist())


def test_every_impression_holds_its_entities_rows(smoke):
  """The parity the serving path relies on: training rows are what it assembles."""
  users, items = pq.read_table(smoke["users.parquet"]), pq.read_table(smoke["items.parquet"])
  for name in ("train.parquet", "eval.parquet"):
    logs = pq.read_table(smoke[name])
    for entity, key, columns in ((users, "user_id", world.USER_COLUMNS),
                                 (items, "item_id", world.ITEM_COLUMNS)):
      rows = pc.index_in(logs[key], value_set=entity[key])
      assert rows.null_count == 0
      assert logs.select(columns).equals(entity.take(rows).select(columns))


def test_click_rate_and_the_teachers_ceiling(smoke):
  meta = json.loads(open(smoke["meta.json"]).read())
  for name in ("train.parquet", "eval.parquet"):
    click = pq.read_table(smoke[name])["click"].to_numpy()
    assert set(np.unique(click)) == {0, 1}
    assert 0.05 < click.mean() < 0.2
  assert meta["train_click_rate"] == pytest.approx(
      pq.read_table(smoke["train.parquet"])["click"].to_numpy().mean())
  assert 0.8 < meta["teacher_eval_auc"] < 0.95


def test_the_config_splits_the_raw_columns_into_user_item_and_context(smoke):
  experiment = config_lib.experiment(config_lib.load(f"{CONFIG}:smoke"), "synthetic_ranking")
  read = {c for f in experiment.features for c in f.columns}
  user, item = experiment.serving.user, experiment.serving.item
  assert (user.key, item.key) == ("user_id", "item_id")
  assert set(user.columns) == {"user_id", *world.USER_COLUMNS}
  assert set(item.columns) == {"item_id", *world.ITEM_COLUMNS}
  assert read - set(user.columns) - set(item.columns) == set(world.CONTEXT_COLUMNS)
  assert (user.files, item.files) == ((smoke["users.parquet"],), (smoke["items.parquet"],))
  assert experiment.data.train == (smoke["train.parquet"],)


def test_smoke_config_learns_the_teacher_end_to_end(smoke, tmp_path):
  # no SavedModel: the export's parity is the export tests' subject, and it costs 5 s here
  result = run_cli("train", "--config", f"{CONFIG}:smoke", "--workdir", tmp_path / "work",
                   "--config.train.progress_bar=False", "--no-export")
  summary = summary_of(result)
  assert summary["train_rows"] == world.VARIANTS["smoke"]["train_rows"]
  assert summary["eval"]["examples"] == world.VARIANTS["smoke"]["eval_rows"]
  assert summary["eval"]["auc"] > 0.6

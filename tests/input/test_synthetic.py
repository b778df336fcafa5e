"""Synthetic source: every column type's raw format, determinism, a learnable teacher."""

import re

import jax
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from recjax import config as config_lib
from recjax.input import pipeline as input_lib
from recjax.tasks import metrics
from recjax.input import synthetic
from recjax.errors import ConfigError


def _schema(columns="sequence", rows=3000, eval_rows=1000, seed=7, **extra):
  return synthetic.schema(dict(rows=rows, eval_rows=eval_rows, seed=seed, columns=columns, **extra))


def _split(table):
  return [v.split("|") if v else [] for v in table.to_pylist()]


def test_same_seed_same_rows_other_split_or_seed_other_rows():
  schema = _schema()
  a, b = synthetic.generate(schema, "train"), synthetic.generate(schema, "train")
  assert a.equals(b)
  evaluation = synthetic.generate(schema, "eval")
  assert evaluation.num_rows == 1000 and a.num_rows == 3000
  assert a["hist_item"].to_pylist()[:50] != evaluation["hist_item"].to_pylist()[:50]
  other = synthetic.generate(_schema(seed=8), "train")
  assert a["item"].to_pylist() != other["item"].to_pylist()


def test_every_column_type_writes_its_raw_format():
  table = synthetic.generate(_schema(), "train")
  assert table.schema.field("user").type == pa.int64()
  users = table["user"].to_numpy()
  assert users.min() >= 0 and users.max() < 20000
  assert all(re.fullmatch(r"i\d+", v) for v in table["item"].to_pylist())
  assert table.schema.field("price").type == pa.float64()
  assert (table["price"].to_numpy() > 0).all()
  hist_item, hist_cat = _split(table["hist_item"]), _split(table["hist_cat"])
  assert [len(h) for h in hist_item] == [len(h) for h in hist_cat]
  assert max(map(len, hist_item)) == 20 and min(map(len, hist_item)) == 0
  # a category per item, the same wherever the item appears (history or candidate)
  category = {}
  for items, cats in zip(hist_item + [[i] for i in table["item"].to_pylist()],
                         hist_cat + [[c] for c in table["cat"].to_pylist()]):
    for item, cat in zip(items, cats):
      assert category.setdefault(item, cat) == cat
      assert re.fullmatch(r"k\d+", cat) and int(cat[1:]) < 500
  tags = [t for row in _split(table["tags"]) for t in row]
  assert all(re.fullmatch(r"t\d+:(0\.\d|1)", t) for t in tags)
  maps = _split(table["cat_ctr"])
  assert all(1 <= len(m) <= 4 for m in maps)
  keys = [[kv.split(":")[0] for kv in m] for m in maps]
  assert all(len(set(k)) == len(k) for k in keys)      # a key at most once per row
  hits = np.mean([cat in k for cat, k in zip(table["cat"].to_pylist(), keys)])
  assert 0.55 < hits < 0.7                             # hit=0.6, plus chance
  vectors = [list(map(float, v.split("|"))) for v in table["user_vec"].to_pylist()]
  assert {len(v) for v in vectors} == {8}


def test_categorical_values_are_zipf_distributed_with_missing_share():
  schema = _schema(dict(c=dict(type="categorical", cardinality=1000, missing=0.2, prefix="v")),
                   rows=20000)
  values = np.array(synthetic.generate(schema, "train")["c"].to_pylist())
  assert abs(np.mean(values == "") - 0.2) < 0.02
  _, counts = np.unique(values[values != ""], return_counts=True)
  counts = np.sort(counts)[::-1]
  assert counts[0] > 10 * counts[20]                   # a heavy head
  assert np.mean(values == "v0") > np.mean(values == "v1") > np.mean(values == "v9")


def test_teacher_sets_the_base_rate_and_its_logits_rank_the_labels():
  schema = _schema("criteo", rows=0, eval_rows=20000, base_rate=0.3)
  table, logits = synthetic.generate(schema, "eval", with_logits=True)
  labels = table["label"].to_numpy()
  assert abs(labels.mean() - 0.3) < 0.02
  assert metrics.auc(labels, logits) > 0.75
  numeric = [f"I{i}" for i in range(1, 14)]
  assert all(np.all(table[c].to_numpy() == np.floor(table[c].to_numpy())) for c in numeric)


@pytest.mark.parametrize("columns, message", [
    (dict(a=dict(type="text")), r"columns.a.type: 'text' is not a column type"),
    (dict(a=dict(type="categorical")), r"columns.a.cardinality: required"),
    (dict(a=dict(type="categorical", cardinality=5, dim=3)), r"columns.a.dim: not a key"),
    (dict(a=dict(type="sequence", cardinality=5, max_len=3, parallel_to="b")),
     r"columns.a.parallel_to: no column 'b'"),
    (dict(a=dict(type="tags", cardinality=0, max_len=2)), r"columns.a.cardinality: expected a positive"),
    ("nope", r"data.synthetic.columns: 'nope' is not a ready-made schema"),
])
def test_bad_schemas_name_the_key(columns, message):
  with pytest.raises(ConfigError, match=message):
    _schema(columns)


def _experiment(train=None, fmt="synthetic", rows=20000):
  config = ml_collections.ConfigDict()
  columns = {**{f"I{i}": synthetic.CRITEO[f"I{i}"] for i in (1, 2, 3)},
             **{f"C{i}": dict(synthetic.CRITEO[f"C{i}"], cardinality=200) for i in (1, 2, 3, 4)}}
  if fmt == "synthetic":
    config.data = dict(format="synthetic",
                       synthetic=dict(rows=rows, eval_rows=2000, seed=3, columns=columns))
  else:
    config.data = dict(format=fmt, train=(str(train),))
  config.label = dict(column="label")
  config.features = {**{f"I{i}": dict(kind="numeric", log1p=True) for i in (1, 2, 3)},
                     **{f"C{i}": dict(kind="id", hash_bucket_size=500) for i in (1, 2, 3, 4)}}
  config.groups = dict(deep=dict(features=tuple(f"C{i}" for i in (1, 2, 3, 4)), dim=8))
  config.model = dict(name="deepfm", hidden=(32,), first_order_group="deep", fm_group="deep")
  config.train = dict(batch_size=512, steps=120, eval_batch_size=1024, progress_bar=False,
                      log_every=120, checkpoint_every=1000)
  config.optimizer = dict(sparse=dict(learning_rate=0.1))
  return config_lib.experiment(config)


def test_generated_columns_read_like_the_same_rows_in_csv_and_parquet(tmp_path):
  experiment = _experiment(rows=500)
  assert experiment.data.train == ("synthetic:train",)
  assert experiment.data.eval == ("synthetic:eval",)
  split = input_lib.load_split(experiment, "train")
  assert split.rows == 500 and split.files == ("synthetic:train",)
  table = synthetic.generate(experiment.data.synthetic, "train")
  pa_csv.write_csv(table, tmp_path / "t.csv")
  pq.write_table(table, tmp_path / "t.parquet")
  for fmt in ("csv", "parquet"):
    arrays = input_lib.load_split(_experiment(tmp_path / f"t.{fmt}", fmt), "train").arrays
    jax.tree.map(np.testing.assert_array_equal, arrays, split.arrays)


def test_a_deepfm_learns_the_teacher(tmp_path):
  from recjax.train import loop as train
  summary = train.train_and_evaluate(_experiment(), tmp_path, run_export=False)
  assert summary["eval"]["auc"] > 0.7, summary["eval"]      # the teacher reaches 0.87
  assert summary["bad_rows"] == {} and summary["train_rows"] == 20000

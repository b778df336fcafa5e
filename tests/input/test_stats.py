"""`recjax stats`: coverage, cardinality, top values, quantiles and proposed boundaries."""

import json

import ml_collections
import numpy as np
import pytest

from recjax import config as config_lib
from recjax.input import stats
from tests.conftest import run_cli, summary_of


def _experiment(path):
  config = ml_collections.ConfigDict()
  config.data = dict(train=(str(path),), bad_rows="error")
  config.label = dict(column="label")
  config.features = dict(
      n=dict(kind="numeric"),
      s=dict(kind="id", hash_bucket_size=100),
      tags=dict(kind="tag", max_len=3, weighted=True, hash_bucket_size=100),
      ctr=dict(kind="lookup", map_column="m", key_column="s"))
  config.groups = dict(deep=dict(features=("s", "tags"), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  return config_lib.experiment(config)


def test_columns_behind_each_feature_are_described(tmp_path):
  rows = ["n,s,tags,m,label"]
  for i in range(1, 101):
    s = "" if i % 10 == 0 else ("a" if i % 2 else "b")
    tags = "" if i % 4 == 0 else "x:0.5|y:1" if i % 3 else "x:2"
    rows.append(f"{i},{s},{tags},a:{i / 100}|b:1,{i % 2}")
  rows.append(",a,x,a:1,1")            # a missing number: bad for training, not coverage
  rows.append("1,a,x")                 # the wrong field count
  path = tmp_path / "t.csv"
  path.write_text("\n".join(rows) + "\n")
  result = stats.compute(_experiment(path), top=2, buckets=4)
  assert result["rows"] == 101
  assert result["bad_rows"] == {"empty_value": 1, "wrong_field_count": 1}
  n = result["features"]["n"]["columns"]["n"]
  assert result["features"]["n"]["kind"] == "numeric" and n["type"] == "numeric"
  assert n["coverage"] == pytest.approx(100 / 101) and n["cardinality"] == 100
  assert n["quantiles"]["0.5"] == 50.5 and n["quantiles"]["1"] == 100
  assert n["boundaries"] == [25.75, 50.5, 75.25]
  s = result["features"]["s"]["columns"]["s"]
  assert s["coverage"] == pytest.approx(91 / 101) and s["cardinality"] == 2
  assert s["top"] == [["a", 51], ["b", 40]]
  tags = result["features"]["tags"]["columns"]["tags"]
  assert tags["type"] == "list" and tags["cardinality"] == 2 and tags["max_length"] == 2
  assert tags["coverage"] == pytest.approx(76 / 101)
  assert tags["top"] == [["x", 76], ["y", 50]]                       # weights stripped
  lookup = result["features"]["ctr"]
  assert lookup["kind"] == "lookup" and set(lookup["columns"]) == {"m", "s"}
  assert lookup["columns"]["m"]["top"] == [["a", 101], ["b", 100]]     # keys of the map
  text = stats.table(result)
  assert "bad rows: {'empty_value': 1, 'wrong_field_count': 1}" in text
  line = next(line for line in text.splitlines() if line.startswith("tags "))
  assert line.split()[:5] == ["tags", "tag", "tags", "0.752", "2"] and "'x':76" in line


def test_boundaries_split_equal_shares_and_skip_repeated_edges():
  np.testing.assert_allclose(stats.propose_boundaries(np.arange(1000.0), 4), [249.75, 499.5, 749.25])
  counts = np.concatenate([np.zeros(900), np.arange(1, 101)])     # mostly zero, like counts
  edges = stats.propose_boundaries(counts, 10)
  assert edges == sorted(set(edges)) and edges[0] > 0 and len(edges) == 1
  assert stats.propose_boundaries(np.array([np.nan, np.inf]), 4) == []


def test_the_stats_command_prints_a_table_and_writes_json(tmp_path):
  config = tmp_path / "synthetic_config.py"
  config.write_text('''
import ml_collections

def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.data = dict(format="synthetic", synthetic=dict(rows=2000, eval_rows=500, seed=1,
      columns=dict(I1=dict(type="numeric", integer=True), C1=dict(type="categorical", cardinality=50))))
  config.label = dict(column="label")
  config.features = dict(I1=dict(kind="numeric", log1p=True), C1=dict(kind="id", hash_bucket_size=64),
                         I1_bucket=dict(kind="id", column="I1", boundaries=(1.0, 3.0)))
  config.groups = dict(deep=dict(features=("C1", "I1_bucket"), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  return config
''')
  output = tmp_path / "stats.json"
  result = run_cli("stats", "--config", config, "--split", "eval", "--output", output)
  assert summary_of(result) == {"split": "eval", "rows": 500, "features": 3, "bad_rows": {},
                                "output": str(output)}
  assert "C1_" not in result.stdout and "C1 " in result.stdout and "'c0':" in result.stdout
  written = json.loads(output.read_text())
  assert written["features"]["C1"]["columns"]["C1"]["top"][0][0] == "c0"      # Zipf's head
  boundaries = written["features"]["I1"]["columns"]["I1"]["boundaries"]
  assert boundaries == sorted(boundaries) and all(b == int(b) for b in boundaries)

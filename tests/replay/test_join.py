"""The label join on hand-made cases: duplicates, the window, pending rows, max and sum
labels, request-id keys; DuckDB and Spark give the same rows."""

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recjax.errors import DataError
from recjax.replay import join as join_lib
from recjax.replay import rows as rows_lib
from recjax.replay import writer as writer_lib
from tests.replay import shop

T0 = 1_800_000_000_000          # ms


def _replay(tmp_path, experiment):
  """e1 (i1, i2, i3) at T0, then e1 again (a retry: i1, i2) at T0 + 100 ms; e2 (i4) at
  T0 + 1 s; e3 (i5) at T0 + 50 s, whose 60 s window outlasts the labels."""
  now = [T0 / 1000]
  writer = writer_lib.ReplayWriter(tmp_path / "replay", experiment.serving.replay,
                                   rows_lib.schema(experiment), [], clock=lambda: now[0])
  for event, items, at in (("e1", ["i1", "i2", "i3"], 0), ("e1", ["i1", "i2"], 100),
                           ("e2", ["i4"], 1000), ("e3", ["i5"], 50_000)):
    now[0] = (T0 + at) / 1000
    writer.log(shop.scored(event, "u1", items), f"r-{event}", [0.5] * len(items))
  writer.close()
  return tmp_path / "replay"


LABELS = [  # event_id, request_id, item_key, at_ms, label
    ("e1", "r-e1", "i1", T0 + 5_000, 1.0),
    ("e1", "r-e1", "i1", T0 + 5_000, 1.0),        # an exact duplicate: once
    ("e1", "r-e1", "i2", T0 + 61_000, 1.0),       # after the 60 s window: outside
    ("e1", "r-e1", "i3", T0 - 1_000, 1.0),        # before the impression: outside
    ("e2", "r-e2", "i4", T0 + 2_000, 1.0),
    ("e2", "r-e2", "i4", T0 + 3_000, 1.0),        # a second event: max 1, sum 2
    ("e9", "r-e9", "i1", T0 + 3_000, 1.0),        # no such impression
    ("e1", "r-e1", "i3", T0 + 62_000, 0.0),       # the latest label: the cut-off T0 + 62 s
]


def _labels(tmp_path) -> str:
  columns = list(zip(*LABELS))
  table = pa.table({"event_id": columns[0], "request_id": columns[1], "item_key": columns[2],
                    "at_ms": pa.array(columns[3], pa.int64()), "label": columns[4]})
  (tmp_path / "labels").mkdir(exist_ok=True)
  pq.write_table(table.slice(0, 4), tmp_path / "labels" / "a.parquet")
  pq.write_table(table.slice(4), tmp_path / "labels" / "b.parquet")
  return str(tmp_path / "labels" / "*.parquet")


def _joined(path) -> dict:
  rows = pq.read_table(path).to_pylist()
  return {(r["event_id"], r["item_key"]): r for r in rows}


def test_the_join_follows_its_rules_on_hand_made_cases(tmp_path):
  experiment = shop.experiment()
  replay, labels = _replay(tmp_path, experiment), _labels(tmp_path)
  counts = join_lib.join(experiment, replay, labels, tmp_path / "out")
  rows = _joined(counts["output"])
  assert {k: r["label"] for k, r in rows.items()} == {
      ("e1", "i1"): 1.0, ("e1", "i2"): 0.0, ("e1", "i3"): 0.0, ("e2", "i4"): 1.0}
  assert rows[("e1", "i1")]["served_at_ms"] == T0          # the first of the retried rows
  assert rows[("e1", "i1")]["title"] == "t i1" and rows[("e1", "i1")]["age"] == 30.0
  assert {k: counts[k] for k in ("replay_rows", "replay_duplicates", "rows_pending",
                                 "rows_joined", "label_events", "label_duplicates",
                                 "labels_unmatched", "labels_outside_window",
                                 "labels_joined", "until_ms")} == {
      "replay_rows": 7, "replay_duplicates": 2, "rows_pending": 1, "rows_joined": 4,
      "label_events": 8, "label_duplicates": 1, "labels_unmatched": 1,
      "labels_outside_window": 3, "labels_joined": 3, "until_ms": T0 + 62_000}
  later = join_lib.join(experiment, replay, labels, tmp_path / "later", until_ms=T0 + 120_000)
  assert later["rows_pending"] == 0 and ("e3", "i5") in _joined(later["output"])


def test_summed_labels_and_request_id_keys(tmp_path):
  experiment = shop.experiment(sum_labels=("label",))
  replay, labels = _replay(tmp_path, experiment), _labels(tmp_path)
  counts = join_lib.join(experiment, replay, labels, tmp_path / "out", key="request_id")
  assert {k: r["label"] for k, r in _joined(counts["output"]).items()} == {
      ("e1", "i1"): 1.0, ("e1", "i2"): 0.0, ("e1", "i3"): 0.0, ("e2", "i4"): 2.0}


def test_bad_inputs_name_the_file_and_column(tmp_path):
  experiment = shop.experiment()
  replay = _replay(tmp_path, experiment)
  (tmp_path / "bad").mkdir()
  pq.write_table(pa.table({"event_id": ["e1"], "item_key": ["i1"], "label": [1.0]}),
                 tmp_path / "bad" / "x.parquet")
  with pytest.raises(DataError, match=r"x.parquet: the label events lack column 'at_ms'"):
    join_lib.join(experiment, replay, str(tmp_path / "bad" / "*.parquet"), tmp_path / "o")
  with pytest.raises(DataError, match="matches no file"):
    join_lib.join(experiment, replay, str(tmp_path / "none*.parquet"), tmp_path / "o")
  with pytest.raises(DataError, match="no replay parts"):
    join_lib.join(experiment, tmp_path / "bad", _labels(tmp_path), tmp_path / "o")
  with pytest.raises(DataError, match="sum_labels: 'clicks'"):
    join_lib.join(shop.experiment(sum_labels=("clicks",)), replay, _labels(tmp_path),
                  tmp_path / "o")


def test_spark_gives_the_same_rows_as_duckdb(tmp_path):
  pytest.importorskip("pyspark", reason="pyspark is not installed: pip install -e '.[spark]'")
  if shutil.which("java") is None:
    pytest.skip("Spark needs Java 17 (apt-get install -y openjdk-17-jre-headless)")
  experiment = shop.experiment()
  replay, labels = _replay(tmp_path, experiment), _labels(tmp_path)
  duck = join_lib.join(experiment, replay, labels, tmp_path / "duck")
  spark = join_lib.join(experiment, replay, labels, tmp_path / "spark", engine="spark")
  assert {k: v for k, v in spark.items() if k not in ("engine", "output", "seconds")} == {
      k: v for k, v in duck.items() if k not in ("engine", "output", "seconds")}
  assert _joined(spark["output"]) == _joined(duck["output"])
  assert pq.read_schema(spark["output"]).names == pq.read_schema(duck["output"]).names


def test_several_label_columns_take_max_or_sum_each(tmp_path):
  experiment = shop.experiment()
  replay = _replay(tmp_path, experiment)
  labels = pa.table({"event_id": ["e1", "e1", "e2", "e2"], "item_key": ["i1", "i1", "i4", "i4"],
                     "at_ms": pa.array([T0 + 1_000, T0 + 2_000, T0 + 3_000, T0 + 4_000]),
                     "label": [1.0, 1.0, 0.0, 1.0], "watch_s": [10.0, 5.0, 30.0, 2.5]})
  pq.write_table(labels, tmp_path / "labels.parquet")
  plan = join_lib.Plan(tuple(rows_lib.schema(experiment).names), ("label", "watch_s"),
                       ("watch_s",), "event_id", 60_000, T0 + 120_000)
  counts = join_lib.run(plan, [str(p) for p in writer_lib.parts(replay)],
                        [str(tmp_path / "labels.parquet")], tmp_path / "out.parquet")
  rows = _joined(tmp_path / "out.parquet")
  assert {k: (r["label"], r["watch_s"]) for k, r in rows.items()} == {
      ("e1", "i1"): (1.0, 15.0), ("e1", "i2"): (0.0, 0.0), ("e1", "i3"): (0.0, 0.0),
      ("e2", "i4"): (1.0, 32.5), ("e3", "i5"): (0.0, 0.0)}
  assert counts["labels_joined"] == 4 and counts["rows_pending"] == 0

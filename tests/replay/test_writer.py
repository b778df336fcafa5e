"""The replay writer: rows equal to what was scored, parts visible only when whole, sampling
by event id, and a kill that loses at most the unflushed buffer, counted by the next writer."""

import json
import signal
import subprocess
import sys

import ml_collections
import numpy as np
import pyarrow.parquet as pq
import pytest

from recjax import config as config_lib
from recjax.errors import ConfigError
from recjax.replay import rows as rows_lib
from recjax.replay import writer as writer_lib
from tests.conftest import ROOT
from tests.replay import shop


def _expected_rows(scored, request_id, scores) -> list[dict]:
  """The slow reference: one dict per candidate, built field by field."""
  out = []
  item_defaulted = [c for c in shop.ITEM if c != "item_id"]
  for i, key in enumerate(scored.item_keys):
    row = {"event_id": scored.event_id, "request_id": request_id,
           "model_version": scored.version, "user_key": scored.user_key, "item_key": key,
           "candidate": i, "score": float(np.float32(scores[i]))}
    names = list(scored.defaulted_user)
    reasons = list(scored.defaulted_user.values())
    if i in scored.defaulted_items:
      names += item_defaulted
      reasons += [scored.defaulted_items[i]] * len(item_defaulted)
    row["defaulted"], row["defaulted_reason"] = names, reasons
    for column in shop.ONE_ROW:
      value = scored.columns[column][0]
      row[column] = float(value) if column == "age" else value
    for column in shop.ITEM:
      value = scored.columns[column][i]
      row[column] = float(value) if column in ("price", "rating") else value
    out.append(row)
  return out


def _read(directory) -> list[dict]:
  rows = []
  for part in writer_lib.parts(directory):
    rows += pq.read_table(part).to_pylist()
  for row in rows:
    row.pop("served_at_ms")
  return rows


def test_logged_rows_equal_what_was_scored_and_parts_rotate_by_rows(tmp_path):
  experiment = shop.experiment(part_rows=4, flush_seconds=60)
  writer = writer_lib.open_writer(experiment, tmp_path)
  requests = [
      (shop.scored("e1", "u1", ["i1", "i2", "i3"], missing={1: "missing_entity"},
                   defaulted_user={"device": "missing_context"}), "r1"),
      (shop.scored("e2", "u2", ["i4"], age=51.5), "r2"),
      (shop.scored("e3", "u1", ["i5", "i6"], version=2, device="android"), "r3"),
  ]
  expected = []
  for scored, request_id in requests:
    scores = np.linspace(0.2, 0.7, len(scored.item_keys))
    assert writer.log(scored, request_id, scores)
    expected += _expected_rows(scored, request_id, scores)
  writer.flush()
  writer.close()
  assert _read(tmp_path / "replay") == expected
  # 4 rows close a part at once; the last 2 wait for the flush
  assert [pq.ParquetFile(p).metadata.num_rows for p in writer_lib.parts(tmp_path / "replay")
          ] == [4, 2]
  assert writer.counts() | {"parts_written": 2} == {
      "rows_logged": 6, "rows_written": 6, "rows_dropped": 0, "rows_failed": 0,
      "rows_lost": 0, "parts_written": 2, "requests_sampled_out": 0}
  assert not list((tmp_path / "replay").glob(".*"))        # no counter, no temporary part


def test_sampling_is_by_event_id_and_a_full_buffer_drops_instead_of_waiting(tmp_path):
  experiment = shop.experiment(sample=0.3, flush_seconds=60, max_buffered_rows=10_000)
  writer = writer_lib.open_writer(experiment, tmp_path)
  events = [f"event-{i}" for i in range(2000)]
  logged = [e for e in events if writer.log(shop.scored(e, "u", ["i1"]), e, [0.5])]
  assert logged == [e for e in events if writer_lib.sampled(e, 0.3)]
  assert 0.25 < len(logged) / len(events) < 0.35
  writer.close()
  full = writer_lib.open_writer(shop.experiment(max_buffered_rows=3, flush_seconds=60),
                                tmp_path / "full")
  assert full.log(shop.scored("a", "u", ["i1", "i2"]), "a", [0.1, 0.2])
  assert not full.log(shop.scored("b", "u", ["i1", "i2"]), "b", [0.1, 0.2])
  full.close()
  assert full.counts()["rows_dropped"] == 2 and full.counts()["rows_written"] == 2


KILLED = """
import sys, time
sys.path.insert(0, {root!r})
from tests.replay import shop
from recjax.replay import writer as writer_lib
writer = writer_lib.open_writer(shop.experiment(part_rows=50, flush_seconds=0.3), {out!r})
print("started", flush=True)
i = 0
while True:
  writer.log(shop.scored(f"e{{i}}", "u1", ["i1", "i2", "i3", "i4", "i5"]), "r", [0.5] * 5)
  i += 1
  if i % 20 == 0:
    print(writer.rows_logged, writer.rows_written, flush=True)
  time.sleep(0.001)
"""


def test_a_killed_writer_leaves_readable_parts_and_the_next_counts_what_it_lost(tmp_path):
  process = subprocess.Popen([sys.executable, "-c", KILLED.format(root=str(ROOT),
                                                                  out=str(tmp_path))],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
  try:
    assert process.stdout.readline().strip() == "started"
    logged = 0
    while logged < 2000:
      logged, _ = map(int, process.stdout.readline().split())
  finally:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
  directory = tmp_path / "replay"
  written = sum(pq.read_table(p).num_rows for p in writer_lib.parts(directory))   # readable
  (counter,) = directory.glob(".*.accepted")
  accepted = int(counter.read_bytes())
  assert accepted >= logged and accepted - written <= 2 * 50 + 5     # two parts at most
  restarted = writer_lib.open_writer(shop.experiment(), tmp_path)
  assert restarted.rows_lost == accepted - written
  assert not list(directory.glob(".tmp-*")) and not list(directory.glob(f".{counter.name[1:]}"))
  record = json.loads((directory / "recovered.jsonl").read_text().splitlines()[-1])
  assert record["accepted"] == accepted and record["written"] == written
  restarted.close()
  assert writer_lib.open_writer(shop.experiment(), tmp_path).rows_lost == 0   # counted once


def test_a_second_live_writer_in_the_directory_is_not_counted_as_lost(tmp_path):
  first = writer_lib.open_writer(shop.experiment(flush_seconds=60), tmp_path)
  first.log(shop.scored("e1", "u", ["i1"]), "r", [0.5])
  second = writer_lib.open_writer(shop.experiment(), tmp_path)
  assert second.rows_lost == 0
  first.close(), second.close()
  assert sum(pq.read_table(p).num_rows for p in writer_lib.parts(tmp_path / "replay")) == 1


def test_a_raw_column_named_like_a_log_column_is_a_config_error():
  schema = rows_lib.schema(shop.experiment())
  assert schema.names[:len(rows_lib.META)] == list(rows_lib.META)
  config = ml_collections.ConfigDict()
  config.data = dict(train=("unused.csv",))
  config.label = dict(column="label")
  config.features = dict(user_id=dict(kind="id", hash_bucket_size=97),
                         candidate=dict(kind="numeric"))
  config.groups = dict(deep=dict(features=("user_id",), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  with pytest.raises(ConfigError, match="'candidate'"):
    rows_lib.schema(config_lib.experiment(config, "clash"))

"""Input: CSV / Parquet reading, bad rows named by file and line, exact resume of batches."""

import gzip

import jax
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recjax import config as config_lib
from recjax import input as input_lib
from recjax.errors import DataError

ROWS = "a,b,c,label\n1,x,2.5,1\n3,y,-1,0\n4,z,0,1\n5,x,7,0\n"


def _experiment(train, *, fmt="csv", header=True, columns=(), strip=False):
  config = ml_collections.ConfigDict()
  config.data = dict(format=fmt, train=(str(train),), header=header, columns=columns,
                     strip_whitespace=strip)
  config.label = dict(column="label")
  config.features = dict(a=dict(kind="numeric", mean=2.0, std=2.0),
                         b=dict(kind="id", vocabulary=("x", "y")),
                         c=dict(kind="numeric", log1p=False),
                         c_bucket=dict(kind="id", column="c", boundaries=(0.0, 2.0)))
  config.groups = dict(deep=dict(features=("b", "c_bucket"), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  return config_lib.experiment(config)


def _write(path, text):
  path.write_text(text)
  return path


def test_csv_rows_become_ids_dense_and_labels(tmp_path):
  split = input_lib.load_split(_experiment(_write(tmp_path / "t.csv", ROWS)), "train")
  np.testing.assert_array_equal(split.arrays["label"], [1, 0, 1, 0])
  np.testing.assert_allclose(split.arrays["dense"], [[-0.5, 2.5], [0.5, -1], [1, 0], [1.5, 7]])
  # column order of ids: declaration order of id features (sorted config keys): b, c_bucket
  ids = split.arrays["ids"]
  assert list(ids) == ["b", "c_bucket"]         # declaration order (sorted config keys)
  np.testing.assert_array_equal(ids["b"][:, 0], [0, 1, 2, 0])
  np.testing.assert_array_equal(ids["c_bucket"][:, 0], [2, 0, 1, 2])
  assert all(v.dtype == np.int32 and v.shape == (4, 1) for v in ids.values())
  np.testing.assert_array_equal(split.arrays["weights"]["b"], np.ones((4, 1)))


def test_headerless_gzip_with_spaces_and_parquet_read_the_same(tmp_path):
  expected = input_lib.load_split(_experiment(_write(tmp_path / "t.csv", ROWS)), "train").arrays
  body = "".join(", ".join(line.split(",")) + "\n" for line in ROWS.splitlines()[1:])
  with gzip.open(tmp_path / "t.csv.gz", "wt") as f:
    f.write(body)
  headerless = _experiment(tmp_path / "t.csv.gz", header=False, columns=("a", "b", "c", "label"),
                           strip=True)
  pq.write_table(pa.table({"a": [1, 3, 4, 5], "b": list("xyzx"), "c": [2.5, -1, 0, 7],
                           "label": [1, 0, 1, 0]}), tmp_path / "t.parquet")
  for experiment in (headerless, _experiment(tmp_path / "t.parquet", fmt="parquet")):
    arrays = input_lib.load_split(experiment, "train").arrays
    jax.tree.map(np.testing.assert_array_equal, arrays, expected)


@pytest.mark.parametrize("text, message", [
    (ROWS.replace("3,y,-1,0", "3,y,0"), r"t.csv:3: expected 4 fields, found 3: '3,y,0'"),
    (ROWS.replace("4,z,0,1", "4,z,0,1,9"), r"t.csv:4: expected 4 fields, found 5"),
    (ROWS.replace("5,x,7,0", "five,x,7,0"), r"t.csv:5: column 'a' holds 'five', which is not a number"),
    (ROWS.replace("3,y,-1,0", "3,y,,0"), r"t.csv:3: column 'c' is empty"),
    (ROWS.replace("3,y,-1,0", "3,y,nan,0"), r"t.csv:3: column 'c' holds nan, which feature 'c'"),
    (ROWS.replace("4,z,0,1", "\n4,z,inf,1"), r"t.csv:5: column 'c' holds inf"),
    (ROWS.replace("3,y,-1,0", "3,y,-1,2"), r"t.csv:3: label 'label' is 2.0; numeric labels"),
    (ROWS.replace("a,b,c,label", "a,bb,c,label"), r"t.csv: no column 'b'; the file has a, bb, c, label"),
])
def test_bad_rows_are_errors_naming_file_and_line(tmp_path, text, message):
  experiment = _experiment(_write(tmp_path / "t.csv", text))
  with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
    input_lib.load_split(experiment, "train")


def test_missing_files_are_named(tmp_path):
  with pytest.raises(DataError, match=r"data.train: no file matches '.*nothing-\*.csv'"):
    input_lib.load_split(_experiment(tmp_path / "nothing-*.csv"), "train")
  with pytest.raises(DataError, match="data.eval: no files configured"):
    input_lib.load_split(_experiment(_write(tmp_path / "t.csv", ROWS)), "eval")


def _split(rows=103):
  rng = np.random.default_rng(0)
  arrays = {"ids": {"x": np.arange(rows, dtype=np.int32).reshape(rows, 1)},
            "weights": {"x": np.ones((rows, 1), np.float32)},
            "dense": rng.normal(size=(rows, 2)).astype(np.float32),
            "label": rng.integers(0, 2, rows).astype(np.float32)}
  return input_lib.Split(arrays, ("memory",))


def test_each_epoch_is_a_fresh_permutation_of_whole_batches():
  split = _split()
  batches = list(input_lib.train_iterator(split, 10, 20, seed=3))
  assert len(batches) == 20 and all(b["ids"]["x"].shape == (10, 1) for b in batches)
  first, second = (np.concatenate([b["ids"]["x"].ravel() for b in batches[e * 10:(e + 1) * 10]])
                   for e in (0, 1))
  assert len(set(first)) == 100 and len(set(second)) == 100     # no row twice in an epoch
  assert not np.array_equal(first, second)
  row = batches[0]["ids"]["x"][0, 0]                             # rows stay aligned across keys
  np.testing.assert_array_equal(batches[0]["dense"][0], split.arrays["dense"][row])


def test_restored_iterator_yields_exactly_the_next_batches():
  split = _split()
  reference = list(input_lib.train_iterator(split, 10, 25, seed=1))
  iterator = input_lib.train_iterator(split, 10, 25, seed=1)
  for _ in range(7):
    next(iterator)
  state = iterator.get_state()
  resumed = input_lib.train_iterator(split, 10, 25, seed=1)
  resumed.set_state(state)
  rest = list(resumed)
  assert len(rest) == 18
  for got, want in zip(rest, reference[7:]):
    jax.tree.map(np.testing.assert_array_equal, got, want)


def test_eval_batches_cover_every_row_once_with_a_mask_on_padding():
  split = _split(25)
  batches = list(input_lib.eval_batches(split, 10))
  assert [int(b["mask"].sum()) for b in batches] == [10, 10, 5]
  ids = np.concatenate([b["ids"]["x"].ravel()[b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(ids, np.arange(25))

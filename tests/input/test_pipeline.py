"""Input: CSV/TSV, Parquet and TFRecord sources, the bad-row policy (with the transforms' own
bad values), sharding, parse-and-transform workers (the same split for any count), exact
resume."""

import dataclasses
import gzip

import jax
import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recjax import config as config_lib
from recjax.input import pipeline as input_lib
from recjax.errors import DataError

ROWS = "a,b,c,label\n1,x,2.5,1\n3,y,-1,0\n4,z,0,1\n5,x,7,0\n"


def _experiment(train, *, fmt="csv", header=True, columns=(), strip=False, **data):
  config = ml_collections.ConfigDict()
  train = tuple(map(str, train)) if isinstance(train, (list, tuple)) else (str(train),)
  config.data = dict(format=fmt, train=train, header=header, columns=columns,
                     strip_whitespace=strip, **data)
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
  np.testing.assert_array_equal(split.arrays["labels"]["label"], [1, 0, 1, 0])
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


BAD_ROWS = [   # (rows with one bad row, its reason, the error naming it, the bad row's index)
    (ROWS.replace("3,y,-1,0", "3,y,0"), "wrong_field_count",
     r"t.csv:3: expected 4 fields, found 3: '3,y,0'", 1),
    (ROWS.replace("4,z,0,1", "4,z,0,1,9"), "wrong_field_count", r"t.csv:4: expected 4 fields, found 5", 2),
    (ROWS.replace("5,x,7,0", "five,x,7,0"), "not_a_number",
     r"t.csv:5: column 'a' holds 'five', which is not a number", 3),
    (ROWS.replace("3,y,-1,0", "3,y,,0"), "empty_value", r"t.csv:3: column 'c' is empty", 1),
    (ROWS.replace("3,y,-1,0", "3,y,nan,0"), "nan_or_inf",
     r"t.csv:3: column 'c' holds nan, which is not a finite number", 1),
    (ROWS.replace("4,z,0,1", "\n4,z,-inf,1"), "nan_or_inf", r"t.csv:5: column 'c' holds -inf", 2),
    (ROWS.replace("3,y,-1,0", "3,y,-1,2"), "bad_label",
     r"t.csv:3: label 'label' is 2.0; task 'label' is binary: numeric labels must be 0 or 1", 1),
]


def _match(message):
  return message.replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("text, reason, message, row", BAD_ROWS)
def test_bad_rows_are_errors_naming_file_and_line(tmp_path, text, reason, message, row):
  experiment = _experiment(_write(tmp_path / "t.csv", text))
  with pytest.raises(DataError, match=_match(message)):
    input_lib.load_split(experiment, "train")


@pytest.mark.parametrize("text, reason, message, row", BAD_ROWS)
def test_bad_rows_are_counted_and_skipped_up_to_the_maximum_share(tmp_path, text, reason, message,
                                                                  row):
  path = _write(tmp_path / "t.csv", text)
  split = input_lib.load_split(_experiment(path, bad_rows="skip", max_bad_fraction=0.25), "train")
  assert split.bad_rows == {reason: 1} and split.rows == 3
  np.testing.assert_array_equal(split.arrays["labels"]["label"], np.delete([1, 0, 1, 0], row))
  np.testing.assert_array_equal(split.arrays["ids"]["b"][:, 0], np.delete([0, 1, 2, 0], row))
  with pytest.raises(DataError, match=_match(
      f"data.train: 1 of 4 rows are bad (1 {reason}), more than data.max_bad_fraction=0.2; "
      "the first: ") + ".*" + _match(message)):
    input_lib.load_split(_experiment(path, bad_rows="skip", max_bad_fraction=0.2), "train")


def test_a_missing_column_is_an_error_under_either_policy(tmp_path):
  path = _write(tmp_path / "t.csv", ROWS.replace("a,b,c,label", "a,bb,c,label"))
  for policy in ("error", "skip"):
    with pytest.raises(DataError, match="t.csv: no column 'b'; the file has a, bb, c, label"):
      input_lib.load_split(_experiment(path, bad_rows=policy, max_bad_fraction=1.0), "train")


def test_skipped_rows_count_over_files_and_later_errors_name_the_right_line(tmp_path):
  first = _write(tmp_path / "t1.csv", ROWS.replace("3,y,-1,0", "3,y").replace("4,z,0,1", "x,z,0,1"))
  second = _write(tmp_path / "t2.csv", ROWS.replace("5,x,7,0", "5,x,7,3"))
  split = input_lib.load_split(
      _experiment([first, second], bad_rows="skip", max_bad_fraction=0.5), "train")
  assert split.bad_rows == {"bad_label": 1, "not_a_number": 1, "wrong_field_count": 1}
  assert split.rows == 5
  # after a skipped row, the row numbers still name the file's own lines
  third = _write(tmp_path / "t3.csv", ROWS.replace("1,x,2.5,1", "1,x").replace("5,x,7,0", "5,x,1e999,0"))
  with pytest.raises(DataError, match=r"1 nan_or_inf, 1 wrong_field_count.*the first: .*t3.csv:2: "
                                      "expected 4 fields"):
    input_lib.load_split(_experiment(third, bad_rows="skip", max_bad_fraction=0.4), "train")


def _identity_experiment(path, **data):
  config = ml_collections.ConfigDict()
  config.data = dict(train=(str(path),), **data)
  config.label = dict(column="label")
  config.features = dict(user=dict(kind="identity", num_buckets=10), c=dict(kind="numeric"))
  config.groups = dict(deep=dict(features=("user",), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  return config_lib.experiment(config)


def test_an_identity_id_out_of_range_is_an_error_or_a_counted_skip(tmp_path):
  path = _write(tmp_path / "t.csv", "user,c,label\n3,1,1\n10,2,0\n007,3,1\n")
  with pytest.raises(DataError, match=r"t.csv:3: column 'user' holds '10'"):
    input_lib.load_split(_identity_experiment(path), "train")
  split = input_lib.load_split(_identity_experiment(path, bad_rows="skip", max_bad_fraction=0.4),
                               "train")
  assert split.bad_rows == {"id_out_of_range": 1}
  np.testing.assert_array_equal(split.arrays["ids"]["user"][:, 0], [3, 7])
  with pytest.raises(DataError, match=r"1 of 3 rows are bad \(1 id_out_of_range\).*the first: "
                                      r".*t.csv:3: column 'user' holds '10', which is not an id "
                                      r"in \[0, num_buckets=10\)"):
    input_lib.load_split(_identity_experiment(path, bad_rows="skip", max_bad_fraction=0.3), "train")


def test_parquet_bad_values_name_the_row_or_are_skipped(tmp_path):
  pq.write_table(pa.table({"a": ["1", "3", "five", "5"], "b": list("xyzx"),
                           "c": [2.5, None, 0, 7], "label": [1, 0, 1, 0]}), tmp_path / "t.parquet")
  with pytest.raises(DataError, match=r"t.parquet, row 3: column 'a' holds 'five', which is not"):
    input_lib.load_split(_experiment(tmp_path / "t.parquet", fmt="parquet"), "train")
  split = input_lib.load_split(_experiment(tmp_path / "t.parquet", fmt="parquet", bad_rows="skip",
                                           max_bad_fraction=0.5), "train")
  assert split.bad_rows == {"empty_value": 1, "not_a_number": 1}
  np.testing.assert_allclose(split.arrays["dense"], [[-0.5, 2.5], [1.5, 7]])


def _example(**features):
  import tensorflow as tf
  feature = {}
  for name, values in features.items():
    values = values if isinstance(values, list) else [values]
    if all(isinstance(v, bytes) for v in values):
      feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    elif all(isinstance(v, int) for v in values):
      feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    else:
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_examples_read_like_the_csv(tmp_path):
  import tensorflow as tf
  expected = input_lib.load_split(_experiment(_write(tmp_path / "t.csv", ROWS)), "train").arrays
  with tf.io.TFRecordWriter(str(tmp_path / "t.tfrecord")) as writer:
    for a, b, c, label in [(1, b"x", 2.5, 1), (3, b"y", -1.0, 0), (4, b"z", 0.0, 1), (5, b"x", 7.0, 0)]:
      writer.write(_example(a=a, b=b, c=c, label=label, other=[b"u", b"v"]))
  arrays = input_lib.load_split(_experiment(tmp_path / "t.tfrecord", fmt="tfrecord"), "train").arrays
  jax.tree.map(np.testing.assert_array_equal, arrays, expected)
  with tf.io.TFRecordWriter(str(tmp_path / "bad.tfrecord")) as writer:
    writer.write(_example(a=1, b=b"x", c=2.5, label=1))
    writer.write(_example(a=3, b=b"y", label=0))                   # no c
    writer.write(_example(a=[4, 5], b=b"z", c=0.0, label=1))       # two values for a number
  with pytest.raises(DataError, match=r"bad.tfrecord, record 3: column 'a' holds '4\|5', which is not"):
    input_lib.load_split(_experiment(tmp_path / "bad.tfrecord", fmt="tfrecord"), "train")
  split = input_lib.load_split(_experiment(tmp_path / "bad.tfrecord", fmt="tfrecord",
                                           bad_rows="skip", max_bad_fraction=0.7), "train")
  assert split.bad_rows == {"empty_value": 1, "not_a_number": 1} and split.rows == 1
  with pytest.raises(DataError, match=r"t.tfrecord: no feature 'd' in the first 1000 records"):
    experiment = _experiment(tmp_path / "t.tfrecord", fmt="tfrecord")
    input_lib.load_split(dataclasses.replace(experiment, features=experiment.features + (
        dataclasses.replace(experiment.features[0], name="d", column="d"),)), "train")


def test_tsv_with_and_without_quoting(tmp_path):
  text = 'a\tb\tc\tlabel\n1\t"x"\t2.5\t1\n3\t"y\tz"\t-1\t0\n'
  path = _write(tmp_path / "t.tsv", text)
  quoted = input_lib.load_split(_experiment(path, delimiter="\t"), "train")
  np.testing.assert_array_equal(quoted.arrays["ids"]["b"][:, 0], [0, 2])    # x, then "y<TAB>z"
  with pytest.raises(DataError, match=r"t.tsv:3: expected 4 fields, found 5"):
    input_lib.load_split(_experiment(path, delimiter="\t", quote_char=""), "train")
  _write(path, text.replace("\tz", ""))
  literal = input_lib.load_split(_experiment(path, delimiter="\t", quote_char=""), "train")
  np.testing.assert_array_equal(literal.arrays["ids"]["b"][:, 0], [2, 2])   # '"x"' is not x


def test_processes_share_files_or_rows(tmp_path):
  paths = [_write(tmp_path / f"t{i}.csv", ROWS.replace("1,x", f"{i},x")) for i in range(3)]
  experiment = _experiment(tmp_path / "t*.csv")
  shares = [input_lib.load_split(experiment, "train", process_index=i, process_count=2)
            for i in range(2)]
  assert shares[0].files == (str(paths[0]), str(paths[2])) and shares[1].files == (str(paths[1]),)
  assert [s.rows for s in shares] == [8, 4]
  single = _experiment(paths[0])
  halves = [input_lib.load_split(single, "train", process_index=i, process_count=2).arrays["labels"]["label"]
            for i in range(2)]
  np.testing.assert_array_equal(np.concatenate(halves), [1, 1, 0, 0])      # rows 0, 2 | 1, 3


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


# ---------------------------------------------------------------- workers

def _long_rows(n=40, bad=None, sep=","):
  """n rows, row 12's `b` a quoted field over many lines (so a cut by bytes would land in it);
  `bad` = {row: line text} replaces rows."""
  lines = []
  for i in range(n):
    b = '"q""\n' + "\n" * 30 + 'x"' if i == 12 else "xyz"[i % 3]
    lines.append((bad or {}).get(i, sep.join([str(i), b, str(i * 0.5 - 3), str(i % 2)])))
  return sep.join(["a", "b", "c", "label"]) + "\n" + "\n".join(lines) + "\n"


def _sources(tmp_path):
  """(experiment for `workers`) per source kind: a CSV with quoted newlines, a TSV without
  quoting, Parquet in row groups of 7, and three CSV files."""
  csv_path = _write(tmp_path / "t.csv", _long_rows())
  tsv_path = _write(tmp_path / "t.tsv", _long_rows(sep="\t").replace('"q""\n' + "\n" * 30 + 'x"',
                                                                       '"q"'))
  table = pa.table({"a": np.arange(40.0), "b": list("xyz" * 14)[:40], "c": np.arange(40) * 0.5,
                    "label": np.arange(40) % 2})
  pq.write_table(table, tmp_path / "t.parquet", row_group_size=7)
  for i in range(3):
    _write(tmp_path / f"m{i}.csv", _long_rows(5 + i))
  return {
      "csv": lambda w: _experiment(csv_path, workers=w),
      "tsv": lambda w: _experiment(tsv_path, delimiter="\t", quote_char="", workers=w),
      "parquet": lambda w: _experiment(tmp_path / "t.parquet", fmt="parquet", workers=w),
      "files": lambda w: _experiment(tmp_path / "m*.csv", workers=w)}


def test_pieces_cut_csv_at_line_ends_outside_quotes_and_parquet_between_row_groups(tmp_path):
  from recjax.input import pieces
  sources = _sources(tmp_path)
  text = (tmp_path / "t.csv").read_bytes()
  spans = pieces.csv_spans(str(tmp_path / "t.csv"), True, '"', 3)
  assert len(spans) == 3 and spans[0][0] == text.index(b"\n") + 1 and spans[-1][1] == len(text)
  for start, stop in spans:
    block = text[start:stop]
    assert block.endswith(b"\n") and block.count(b'"') % 2 == 0
  parquet = pieces.plan([str(tmp_path / "t.parquet")], sources["parquet"](3).data, 3)
  assert [p.span for p in parquet] == [(0, 2), (2, 4), (4, 6)]          # 6 row groups
  files = pieces.plan(sorted(map(str, tmp_path.glob("m*.csv"))), sources["files"](2).data, 2)
  assert len(files) == 3                                                 # whole files


@pytest.mark.parametrize("source", ["csv", "tsv", "parquet", "files"])
def test_any_number_of_workers_gives_the_same_split_bitwise(tmp_path, source):
  experiment = _sources(tmp_path)[source]
  expected = input_lib.load_split(experiment(1), "train")
  assert expected.rows == (15 + 3 if source == "files" else 40)
  for workers in (2, 3):
    got = input_lib.load_split(experiment(workers), "train")
    assert got.rows == expected.rows
    jax.tree.map(np.testing.assert_array_equal, got.arrays, expected.arrays)
  if source == "csv":
    np.testing.assert_array_equal(expected.arrays["ids"]["b"][12:14, 0], [2, 1])   # OOV, y


def test_bad_rows_in_later_blocks_name_their_line_and_tallies_merge(tmp_path):
  # row 12 spans lines 14-45 of the file; row 35 (line 68) falls in the last of 3 blocks
  bad = {3: "3,x,1,0,9", 35: "35,y,oops,1"}
  path = _write(tmp_path / "t.csv", _long_rows(bad={35: bad[35]}))
  with pytest.raises(DataError, match=r"t.csv:68: column 'c' holds 'oops', which is not a num"):
    input_lib.load_split(_experiment(path, workers=3), "train")
  _write(path, _long_rows(bad=bad))
  skip = dict(bad_rows="skip", max_bad_fraction=0.1)
  splits = [input_lib.load_split(_experiment(path, workers=w, **skip), "train") for w in (1, 3)]
  for split in splits:
    assert split.bad_rows == {"not_a_number": 1, "wrong_field_count": 1} and split.rows == 38
  jax.tree.map(np.testing.assert_array_equal, splits[0].arrays, splits[1].arrays)
  with pytest.raises(DataError, match=r"2 of 40 rows are bad .* the first: .*t.csv:5: expected 4 "
                                      r"fields, found 5"):
    input_lib.load_split(_experiment(path, workers=3, bad_rows="skip", max_bad_fraction=0.04),
                         "train")


def test_a_transform_error_in_a_later_block_names_its_line(tmp_path):
  rows = "".join(f"{i % 10},{i},{i % 2}\n" for i in range(30)).replace("\n7,27,", "\n77,27,")
  path = _write(tmp_path / "t.csv", "user,c,label\n" + rows)
  with pytest.raises(DataError, match=r"t.csv:29: column 'user' holds '77', which is not an id"):
    input_lib.load_split(_identity_experiment(path, workers=2), "train")


def test_workers_must_not_be_negative(tmp_path):
  with pytest.raises(Exception, match=r"data.workers: -1 is not 0 or more"):
    _experiment(_write(tmp_path / "t.csv", ROWS), workers=-1)


def test_skip_checks_identity_ids_with_the_features_own_parsing(tmp_path):
  # " 2" and "0x5" parse as TF's to_number reads them, as in serving; "1e3" is out of range
  values = ["1.0", " 2", "1e3", "-0", "3.5", "", "0x5"]
  path = _write(tmp_path / "t.csv", "user,c,label\n" + "".join(f"{v},1,0\n" for v in values))
  split = input_lib.load_split(_identity_experiment(path, bad_rows="skip", max_bad_fraction=0.5),
                               "train")
  assert split.bad_rows == {"id_out_of_range": 2, "empty_value": 1}
  np.testing.assert_array_equal(split.arrays["ids"]["user"][:, 0], [1, 2, 0, 5])
  for line, value in enumerate(values, 2):      # "error" stops at exactly the skipped rows
    one = _write(tmp_path / "one.csv", f"user,c,label\n{value},1,0\n")
    if value in ("1e3", "3.5", ""):
      with pytest.raises(DataError, match=rf"one.csv:2: column 'user' holds {value!r}"):
        input_lib.load_split(_identity_experiment(one), "train")
    else:
      input_lib.load_split(_identity_experiment(one), "train")


def _tag_experiment(path, fraction):
  config = ml_collections.ConfigDict()
  config.data = dict(train=(str(path),), bad_rows="skip", max_bad_fraction=fraction)
  config.label = dict(column="label")
  config.features = dict(t=dict(kind="tag", max_len=2, weighted=True, hash_bucket_size=10),
                         v=dict(kind="numeric", dim=2))
  config.groups = dict(deep=dict(features=("t",), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  return config_lib.experiment(config)


def test_skip_drops_rows_a_feature_transform_rejects(tmp_path):
  path = _write(tmp_path / "t.csv", "t,v,label\na:1,1|2,1\nb:x,3|4,0\nc:2,5,1\nd:1,6|7,0\n")
  split = input_lib.load_split(_tag_experiment(path, 0.5), "train")
  assert split.bad_rows == {"not_a_number": 1, "wrong_value_count": 1}
  np.testing.assert_array_equal(split.arrays["dense"], [[1, 2], [6, 7]])
  np.testing.assert_array_equal(split.arrays["labels"]["label"], [1, 0])
  with pytest.raises(DataError, match=r"1 not_a_number, 1 wrong_value_count.*the first: .*t.csv:3: "
                                      r"column 't' holds 'b:x', whose weight 'x' is not a number"):
    input_lib.load_split(_tag_experiment(path, 0.4), "train")

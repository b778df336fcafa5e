"""Tests for recjax.features.spec: the numpy transform (training) and its TF twin (serving) must give
the same ids and values on awkward raw data, or the served model sees other rows than it
learned; plus the errors that bad configs and bad rows raise."""

import numpy as np
import pytest
import tensorflow as tf

from recjax import errors
from recjax.features import spec as features

STRINGS = [
    "", " ", "  padded  ", "\t", "\n", "a b", "a", "A",
    "Ünïcödé", "中文", "😀", "👩‍👩‍👧", "x" * 10_000, "中" * 10_000,
    "0", "1", "1.0", "-3", "1e5", "nan", "None", "null",
]
VOCABULARY = ("", "Ünïcödé", "中文", "😀", "1", "a", " a", "x" * 10_000)
BOUNDARIES = (-10.0, 0.0, 0.1, 18.0, 65.0, 1e6)
# (raw value, id): id i when BOUNDARIES[i-1] <= float32(value) < BOUNDARIES[i].
BUCKETS = [
    (-1e300, 0), (-1e9, 0), (-10.000001, 0), (-10.0, 1), (-3.5, 1), (-0.0, 2), (0.0, 2),
    (0.05, 2), (float(np.nextafter(np.float32(0.1), np.float32(0))), 2), (0.1, 3),
    (7, 3), (17.999, 3), (18.0, 4), (64.99999, 4), (65.0, 5),
    (float(np.nextafter(np.float32(1e6), np.float32(0))), 5), (1e6, 6), (1e30, 6), (1e300, 6),
]


def _objects(values):
  out = np.empty(len(values), object)
  out[:] = values
  return out


def _tf_ids(feature, values):
  return feature.tf_ids(tf.constant(values), feature.tf_table()).numpy()


def test_hash_ids_match_tf():
  feature = features.IdFeature("h", hash_bucket_size=1000)
  ids = feature.ids(_objects(STRINGS))
  assert ids.dtype == np.int32 and ids.shape == (len(STRINGS),)
  np.testing.assert_array_equal(ids, _tf_ids(feature, STRINGS))
  assert ids.min() >= 0 and ids.max() < 1000
  assert len(set(ids.tolist())) > len(STRINGS) // 2       # hashing, not a constant


@pytest.mark.parametrize("num_oov_buckets", [1, 4])
def test_vocabulary_ids_match_tf(num_oov_buckets):
  feature = features.IdFeature("v", vocabulary=VOCABULARY, num_oov_buckets=num_oov_buckets)
  values = STRINGS + list(VOCABULARY) + ["a"] * 3      # repeats go through np.unique's inverse
  ids = feature.ids(_objects(values))
  np.testing.assert_array_equal(ids, _tf_ids(feature, values))
  vocab_index = {v: i for i, v in enumerate(VOCABULARY)}
  for value, id_ in zip(values, ids):
    if value in vocab_index:
      assert id_ == vocab_index[value], value[:20]
    else:
      assert len(VOCABULARY) <= id_ < len(VOCABULARY) + num_oov_buckets, value[:20]
  oov = {int(i) for v, i in zip(values, ids) if v not in vocab_index}
  assert len(oov) == num_oov_buckets          # 15 OOV strings fill every bucket
  assert feature.num_ids == len(VOCABULARY) + num_oov_buckets


def test_vocabulary_keeps_trailing_nul():
  # numpy's fixed-width str dtype drops trailing NULs, which must not change the id.
  feature = features.IdFeature("v", vocabulary=("a", "b"), num_oov_buckets=5)
  values = ["a", "a\x00", "zz", "zz\x00", "b\x00\x00"]
  np.testing.assert_array_equal(feature.ids(_objects(values)), _tf_ids(feature, values))


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_bucket_ids_match_tf_and_boundaries():
  feature = features.IdFeature("age", boundaries=BOUNDARIES)
  raw = np.array([v for v, _ in BUCKETS], np.float64)
  expected = [i for _, i in BUCKETS]
  np.testing.assert_array_equal(feature.ids(raw), expected)
  np.testing.assert_array_equal(feature.ids(_objects([v for v, _ in BUCKETS])), expected)
  np.testing.assert_array_equal(_tf_ids(feature, raw), expected)
  assert feature.num_ids == len(BOUNDARIES) + 1 and feature.numeric


@pytest.mark.parametrize("log1p, mean, std", [
    (False, 0.0, 1.0), (False, 3.25, 0.7), (True, 0.0, 1.0), (True, -2.5, 1.7)])
def test_numeric_values_match_tf(log1p, mean, std):
  feature = features.NumericFeature("x", log1p=log1p, mean=mean, std=std)
  raw = np.array([0.0, 1e-8, 0.3, 1.0, 5.5, 17.0, 12345.678, 1e6, 3e9, -0.5, -0.999])
  if not log1p:
    raw = np.concatenate([raw, [-1e6, -42.0, 1e30]])
  values = feature.values(raw)
  assert values.dtype == np.float32
  x = raw.astype(np.float32).astype(np.float64)          # the raw value is read as float32
  expected = ((np.log1p(x) if log1p else x) - mean) / std
  np.testing.assert_allclose(values, expected, rtol=1e-6)
  np.testing.assert_array_equal(values, feature.tf_values(tf.constant(raw)).numpy())


# `column` is spelled out: only the config builder defaults it to the name.
FEATURES = (
    features.IdFeature("user", column="user_id", hash_bucket_size=97),
    features.NumericFeature("income", column="income", log1p=True, mean=10.0, std=2.0),
    features.IdFeature("country", column="country", vocabulary=("de", "fr", "中文", ""),
                       num_oov_buckets=3),
    features.IdFeature("age_bucket", column="age", boundaries=BOUNDARIES),
    features.NumericFeature("age", column="age", mean=40.0, std=12.5),
)


def _columns():
  n = len(STRINGS)
  rng = np.random.default_rng(0)
  return {
      "user_id": _objects(STRINGS),
      "country": _objects(["de", "fr", "中文", "", "xx", "DE", "fr ", "😀"] * 2
                          + STRINGS[:n - 16]),
      "age": np.array([v for v, _ in BUCKETS[1:-1]] + [33.0] * (n - len(BUCKETS) + 2)),
      "income": rng.uniform(0, 1e5, n),
  }


def test_transform_matches_tf_transform():
  columns = _columns()
  out = features.transform(FEATURES, columns)
  tf_out = features.TfTransform(FEATURES)({k: tf.constant(v) for k, v in columns.items()})
  n = len(STRINGS)
  assert list(out["ids"]) == ["user", "country", "age_bucket"]     # declaration order
  assert all(v.shape == (n, 1) and v.dtype == np.int32 for v in out["ids"].values())
  assert out["dense"].shape == (n, 2)
  for name in out["ids"]:
    np.testing.assert_array_equal(out["ids"][name], tf_out["ids"][name].numpy())
    np.testing.assert_array_equal(out["weights"][name], tf_out["weights"][name].numpy())
    np.testing.assert_array_equal(out["weights"][name], 1.0)
  np.testing.assert_array_equal(out["dense"], tf_out["dense"].numpy())
  np.testing.assert_array_equal(out["ids"]["country"][:4, 0], [0, 1, 2, 3])
  np.testing.assert_array_equal(out["ids"]["age_bucket"][:, 0], FEATURES[3].ids(columns["age"]))
  np.testing.assert_allclose(out["dense"][:, 1], (columns["age"] - 40.0) / 12.5, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad, row", [(np.nan, 5), (np.inf, 2), (-np.inf, 7)])
def test_transform_names_the_row_of_a_non_finite_value(bad, row):
  columns = _columns()
  columns["age"][row] = bad
  columns["age"][row + 3] = np.nan                     # only the first bad row is reported
  with pytest.raises(errors.DataError) as info:
    features.transform(FEATURES, columns, where=lambda r: f"train.csv line {r + 2}")
  message = str(info.value)
  assert f"train.csv line {row + 2}:" in message
  assert "'age'" in message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_transform_rejects_a_value_its_transform_makes_non_finite():
  columns = _columns()
  columns["income"][4] = -1.0                          # log1p(-1) = -inf
  with pytest.raises(errors.DataError, match=r"^part-0003\.parquet row 4: .*'income'"):
    features.transform(FEATURES, columns, where=lambda r: f"part-0003.parquet row {r}")


@pytest.mark.parametrize("kwargs", [
    dict(hash_bucket_size=10, vocabulary=("a",)),
    dict(hash_bucket_size=10, boundaries=(1.0,)),
    dict(),
    dict(boundaries=(1.0, 1.0)),
    dict(boundaries=(2.0, 1.0)),
    dict(boundaries=(0.0, 5.0, 3.0)),
    dict(vocabulary=("a", "b", "a")),
    dict(vocabulary=("a",), num_oov_buckets=0),
])
def test_id_feature_config_errors(kwargs):
  with pytest.raises(ValueError):
    features.IdFeature("f", **kwargs)


def test_numeric_feature_rejects_non_positive_std():
  with pytest.raises(ValueError):
    features.NumericFeature("x", std=0.0)

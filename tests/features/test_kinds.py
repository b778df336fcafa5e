"""Every feature kind: its numpy path (training) and its TF twin (serving) give identical ids,
weights and values on awkward raw rows (empty strings, unicode, very long strings, numbers
written as strings, missing values), eagerly and inside a tf.function graph; bad values
raise errors naming the row and column; and a SavedModel with every kind equals JAX."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax import errors
from recjax.export import saved_model as export
from recjax.features import spec as features

LONG = "x" * 10_000
WIDE = "中" * 10_000


def _objects(values):
  out = np.empty(len(values), object)
  out[:] = values
  return out


def _tf_columns(feats, columns):
  """Serving inputs: numeric columns as float32 (what a request carries), others strings."""
  numeric = {c for f in feats for c in f.numeric_columns}
  return {c: tf.constant(v.astype(np.float32)) if c in numeric else tf.constant(v, tf.string)
          for c, v in columns.items()}


def assert_twins_equal(feats, columns):
  """numpy transform == TfTransform eagerly == TfTransform in a graph, bit for bit."""
  out = features.transform(feats, columns)
  twin = features.TfTransform(feats)
  tf_columns = _tf_columns(feats, columns)
  signature = {c: tf.TensorSpec([None], v.dtype) for c, v in tf_columns.items()}
  graph = tf.function(lambda cols: twin(cols), input_signature=[signature], autograph=False)
  for result in (twin(tf_columns), graph(tf_columns)):
    assert list(result["ids"]) == list(out["ids"])
    for name in out["ids"]:
      np.testing.assert_array_equal(result["ids"][name].numpy(), out["ids"][name], err_msg=name)
      np.testing.assert_array_equal(result["weights"][name].numpy(), out["weights"][name],
                                    err_msg=name)
      assert out["ids"][name].dtype == np.int32 and out["weights"][name].dtype == np.float32
    np.testing.assert_array_equal(result["dense"].numpy(), out["dense"])
    assert out["dense"].dtype == np.float32
  return out


def assert_both_reject(feats, columns, match):
  """The numpy path raises DataError matching `match`; serving the row fails too."""
  with pytest.raises(errors.DataError, match=match):
    features.transform(feats, columns, where=lambda row: f"day.csv:{row + 2}")
  with pytest.raises(tf.errors.InvalidArgumentError):
    features.TfTransform(feats)(_tf_columns(feats, columns))


# ---------------------------------------------------------------- identity

IDENTITY_TEXT = ["7", "007", " 5 ", "5 ", "+3", "1e2", "7.0", "-0", "0", "0x10", "999",
                 "", "1000", "-1", "1e300", "12345678901234567890"]
IDENTITY_IDS = [7, 7, 5, 5, 3, 100, 7, 0, 0, 16, 999, 42, 42, 42, 42, 42]


def test_identity_ids_match_tf_and_map_missing_and_out_of_range_to_default():
  f = features.IdentityFeature("n", column="n", num_buckets=1000, out_of_range="default",
                               default=42)
  out = assert_twins_equal((f,), {"n": _objects(IDENTITY_TEXT)})
  np.testing.assert_array_equal(out["ids"]["n"][:, 0], IDENTITY_IDS)
  assert f.num_ids == 1000 and f.length == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad, what", [
    ("1000", "not an id in"), ("", "not an id in"), ("-1", "not an id in"),
    ("1.5", "not an integer"), ("nan", "not an integer"), ("inf", "not an integer"),
    ("a", "not a number"), ("中文", "not a number"), (LONG, "not a number")])
def test_identity_errors_name_the_row(bad, what):
  f = features.IdentityFeature("n", column="n", num_buckets=1000)
  values = ["1", "2", "3", bad, "4", bad]
  assert_both_reject((f,), {"n": _objects(values)}, rf"^day\.csv:5: column 'n' .*{what}")


def test_identity_non_integers_are_errors_even_with_a_default():
  f = features.IdentityFeature("n", column="n", num_buckets=10, out_of_range="default")
  assert_both_reject((f,), {"n": _objects(["1", "2.5"])}, r"day\.csv:3: .*not an integer")


# ---------------------------------------------------------------- numeric

RAW_NUMBERS = np.array([0.0, -0.0, 1e-8, 0.3, 1.0, 5.5, 17.0, 12345.678, 1e6, 3e9, -0.5,
                        -0.999, 1 / 3, 2.0 ** -20, 65504.0, 7e-39])


@pytest.mark.parametrize("kwargs", [
    dict(), dict(log1p=True), dict(mean=3.25, std=0.7), dict(log1p=True, mean=-2.5, std=1.7),
    dict(min=-1.0, max=1e6), dict(log1p=True, min=0.0, max=14.5)])
def test_numeric_values_bitwise_equal_tf(kwargs):
  f = features.NumericFeature("x", column="x", **kwargs)
  out = assert_twins_equal((f,), {"x": RAW_NUMBERS})
  x = RAW_NUMBERS.astype(np.float32).astype(np.float64)
  x = np.log1p(x) if kwargs.get("log1p") else x
  lo, scale = ((kwargs["min"], kwargs["max"] - kwargs["min"]) if "min" in kwargs
               else (kwargs.get("mean", 0.0), kwargs.get("std", 1.0)))
  np.testing.assert_allclose(out["dense"][:, 0], (x - lo) / scale, rtol=2e-6, atol=1e-30)


VECTORS = ["1|2|3", "007| 5 |1e3", "0x10|-0|.5", "+3|5.|-1e-3", "1e30|-1e30|3.4e38",
           "0.1|0.2|0.3", "-7|8|9"]


@pytest.mark.parametrize("kwargs", [dict(), dict(mean=1.0, std=3.0), dict(min=-8.0, max=9.0)])
def test_multi_dimensional_numeric_values_bitwise_equal_tf(kwargs):
  f = features.NumericFeature("v", column="v", dim=3, **kwargs)
  out = assert_twins_equal((f,), {"v": _objects(VECTORS)})
  assert out["dense"].shape == (len(VECTORS), 3)
  if not kwargs:
    np.testing.assert_array_equal(out["dense"][:3], [[1, 2, 3], [7, 5, 1000], [16, -0.0, 0.5]])
  assert f.numeric_columns == () and f.columns == ("v",)


@pytest.mark.parametrize("bad, what", [
    ("1|2", "2 numbers where feature 'v' has dim 3"), ("", "0 numbers"),
    ("1|2|3|4", "4 numbers"), ("1|a|3", "whose 'a' is not a number"),
    ("1||3", "whose '' is not a number"), ("1|2|中文", "not a number")])
def test_multi_dimensional_numeric_errors_name_the_row(bad, what):
  f = features.NumericFeature("v", column="v", dim=3)
  assert_both_reject((f,), {"v": _objects(["1|2|3", bad, "4|5|6"])},
                     rf"^day\.csv:3: column 'v' .*{what}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("feature, column", [
    (features.NumericFeature("v", column="v", dim=2), _objects(["1|2", "1|inf"])),
    (features.NumericFeature("v", column="v", dim=3), _objects(["1|2|3", "1|nan|3"])),
    (features.NumericFeature("v", column="v"), np.array([1.0, np.nan])),
    (features.NumericFeature("v", column="v"), np.array([1.0, -np.inf])),
    (features.NumericFeature("v", column="v", log1p=True), np.array([1.0, -1.0])),
    (features.LookupFeature("v", map_column="v", key_column="k"), _objects(["a:1", "a:nan"]))])
def test_non_finite_values_stop_training_and_serving_naming_the_row(feature, column):
  columns = {"v": column, "k": _objects(["a", "a"])}
  assert_both_reject((feature,), columns, r"^day\.csv:3: column 'v' holds ")


# ---------------------------------------------------------------- tags

TAG_ROWS = ["", "a", "a|b|c", "a||b", "|", "中文|😀|Ünïcödé", f"{LONG}|{WIDE}", "a|b|c|d|e|f|g",
            " a | b ", "007|7|1e3", "a|a|a", "\t|\n"]
WEIGHTED_ROWS = ["", "a:0.5|b:2", "a", "a: 0.5|b:007|c:1e3|d:-1", "k:v:2|:3", "中文:0.25",
                 f"{LONG}:2|{WIDE}:0", "a:1|b:2|c:3|d:4|e:5|f:6", "x:0x10| y :+3", "a:1e-45"]


@pytest.mark.parametrize("ids", [dict(hash_bucket_size=1000),
                                 dict(vocabulary=("a", "b", "中文", LONG, ""), num_oov_buckets=3)])
def test_tag_ids_and_weights_match_tf(ids):
  f = features.TagFeature("t", column="t", max_len=4, **ids)
  out = assert_twins_equal((f,), {"t": _objects(TAG_ROWS)})
  weights = out["weights"]["t"]
  np.testing.assert_array_equal(weights.sum(1), [0, 1, 3, 3, 2, 3, 2, 4, 2, 3, 3, 2])
  np.testing.assert_array_equal(out["ids"]["t"][weights == 0], 0)        # padding: id 0
  np.testing.assert_array_equal(out["ids"]["t"][2, :3], out["ids"]["t"][7, :3])  # a, b, c first
  assert f.length == 4
  if "vocabulary" in ids:
    np.testing.assert_array_equal(out["ids"]["t"][2, [0, 1, 3]], [0, 1, 0])
    assert 5 <= out["ids"]["t"][2, 2] < 8                               # "c": an OOV bucket
    assert out["ids"]["t"][3, 1] == 4 and f.num_ids == 8                # "a||b": "" is a value


def test_weighted_tags_match_tf_and_parse_the_weight_after_the_last_separator():
  f = features.TagFeature("t", column="t", max_len=3, weighted=True, hash_bucket_size=1 << 20)
  plain = features.TagFeature("p", column="p", max_len=3, hash_bucket_size=1 << 20)
  out = assert_twins_equal((f, plain), {"t": _objects(WEIGHTED_ROWS),
                                        "p": _objects(["a|b", "k:v|", "中文"])})
  weights = out["weights"]["t"]
  np.testing.assert_array_equal(weights[:6], np.array(
      [[0, 0, 0], [0.5, 2, 0], [1, 0, 0], [0.5, 7, 1000], [2, 3, 0], [0.25, 0, 0]], np.float32))
  np.testing.assert_array_equal(weights[8], [16, 3, 0])
  assert weights[9, 0] == np.float32(1e-45)              # a subnormal weight, parsed alike
  np.testing.assert_array_equal(out["ids"]["t"][1, :2], out["ids"]["p"][0, :2])   # a, b
  np.testing.assert_array_equal(out["ids"]["t"][4, :2], out["ids"]["p"][1, :2])   # "k:v", ""
  assert out["ids"]["t"][5, 0] == out["ids"]["p"][2, 0]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("bad, what", [("a:x", "weight 'x' is not a number"),
                                       ("b:1|a:", "weight '' is not a number"),
                                       ("a:nan", "weight 'nan' is not finite"),
                                       ("a:1|b:-inf", "is not finite"), ("a:1e39", "not finite"),
                                       ("a:0,5", "not a number")])
def test_weighted_tag_errors_name_the_row(bad, what):
  f = features.TagFeature("t", column="t", max_len=3, weighted=True, hash_bucket_size=10)
  assert_both_reject((f,), {"t": _objects(["a:1", "b:2", bad])},
                     rf"^day\.csv:4: column 't' holds .*{what} \(feature 't'\)")


# ---------------------------------------------------------------- combo

def test_combo_ids_match_tf_and_keep_joined_keys_apart():
  f = features.ComboFeature("x", inputs=("u", "c", "d"), hash_bucket_size=1 << 30)
  u = ["", "a_b", "a", "中文", LONG, "007", "1e3", "", " "]
  c = ["", "c", "b_c", "😀", WIDE, "7", "1000", " ", ""]
  d = ["", "z", "z", "", "", "", "", "", ""]
  out = assert_twins_equal((f,), {"u": _objects(u), "c": _objects(c), "d": _objects(d)})
  ids = out["ids"]["x"][:, 0]
  assert len(set(ids.tolist())) == len(u)              # ("a_b","c") != ("a","b_c"), etc.
  single = features.IdFeature("k", column="k", hash_bucket_size=1 << 30)
  joined = _objects([f"{a}\x1f{b}\x1f{e}" for a, b, e in zip(u, c, d)])
  np.testing.assert_array_equal(ids, single.ids(joined))
  assert f.columns == ("u", "c", "d") and f.num_ids == 1 << 30


# ---------------------------------------------------------------- sequence

HIST_ITEMS = ["", "i1", "i1|i2|i3", "i1|i2|i3|i4|i5", "中文|😀", "|i9", f"{LONG}|i1", "i5|i4|i3|i2|i1|i0"]
HIST_CATS = ["", "c1", "c1|c2|c1", "c1|c2|c3|c4|c5", "x|y", "c9|", f"c|{WIDE}", "a|b|c|d|e|f"]


def _sequence_features(keep="last"):
  return (
      features.IdFeature("item_id", column="item_id", hash_bucket_size=5000),
      features.SequenceFeature("hist_item", column="hist_item", max_len=4, keep=keep,
                               hash_bucket_size=5000, table="item_id"),
      features.SequenceFeature("hist_cat", column="hist_cat", max_len=4, keep=keep,
                               vocabulary=("c1", "c2", "c3", "c4", "c5"), num_oov_buckets=2,
                               aligned_with="hist_item"))


def _sequence_columns():
  return {"item_id": _objects(["i1", "i2", "i3", "i4", "i5", "i0", "中文", LONG]),
          "hist_item": _objects(HIST_ITEMS), "hist_cat": _objects(HIST_CATS)}


@pytest.mark.parametrize("keep", ["last", "first"])
def test_sequence_ids_and_mask_match_tf_and_truncate_on_the_kept_side(keep):
  feats = _sequence_features(keep)
  out = assert_twins_equal(feats, _sequence_columns())
  mask = out["weights"]["hist_item"]
  np.testing.assert_array_equal(mask.sum(1), [0, 1, 3, 4, 2, 2, 2, 4])
  np.testing.assert_array_equal(mask, out["weights"]["hist_cat"])
  item = dict(zip(["i1", "i2", "i3", "i4", "i5", "i0"], out["ids"]["item_id"][:6, 0]))
  hist = out["ids"]["hist_item"]
  # elements share item_id's table: the same string gets the same id, oldest first
  np.testing.assert_array_equal(hist[2, :3], [item["i1"], item["i2"], item["i3"]])
  kept = ["i2", "i3", "i4", "i5"] if keep == "last" else ["i1", "i2", "i3", "i4"]
  np.testing.assert_array_equal(hist[3], [item[i] for i in kept])
  kept = ["i3", "i2", "i1", "i0"] if keep == "last" else ["i5", "i4", "i3", "i2"]
  np.testing.assert_array_equal(hist[7], [item[i] for i in kept])
  assert hist[4, 0] == out["ids"]["item_id"][6, 0] and hist[6, 0] == out["ids"]["item_id"][7, 0]
  np.testing.assert_array_equal(hist[mask == 0], 0)
  cats = out["ids"]["hist_cat"]
  np.testing.assert_array_equal(cats[2, :3], [0, 1, 0])
  np.testing.assert_array_equal(cats[3], [1, 2, 3, 4] if keep == "last" else [0, 1, 2, 3])


def test_sequence_lists_of_different_lengths_name_the_row():
  columns = _sequence_columns()
  columns["hist_cat"][5] = "c9"                        # "|i9" has 2 elements, "c9" one
  assert_both_reject(_sequence_features(), columns,
                     r"^day\.csv:7: column 'hist_cat' holds 1 values but column 'hist_item' 2")


def test_sequence_shares_the_table_in_a_group():
  from recjax.embedding import tables as embedding
  group = features.Group("deep", ("item_id", "hist_item", "hist_cat"), dim=4)
  specs, plans = embedding.plan(_sequence_features(), (group,))
  assert [(s.name, s.rows) for s in specs] == [("item_id", 5000), ("hist_cat", 7)]
  assert plans[0].tables == ("item_id", "item_id", "hist_cat")


# ---------------------------------------------------------------- lookup

MAPS = ["sports:3|news:12", "news:007", "", "a:1|a:2", "中文:5|😀:1e3", "a:b:3", ":4|x:1",
        "news: 5 |sports:0x10", f"{LONG}:2", "k:1.5e-3"]
KEYS = ["news", "news", "news", "a", "中文", "a:b", "", "sports", LONG, "absent"]


@pytest.mark.parametrize("kwargs", [dict(), dict(default=0.5, log1p=True, mean=1.0, std=2.0)])
def test_lookup_values_match_tf_first_entry_wins_and_absent_keys_read_the_default(kwargs):
  f = features.LookupFeature("clicks", map_column="m", key_column="k", **kwargs)
  out = assert_twins_equal((f,), {"m": _objects(MAPS), "k": _objects(KEYS)})
  expected = np.array([12, 7, 0, 1, 5, 3, 4, 16, 2, 0], np.float32)
  if kwargs:
    expected[[2, 9]] = 0.5
    expected = (tf.math.log1p(expected).numpy() - np.float32(1)) * np.float32(0.5)
  np.testing.assert_array_equal(out["dense"][:, 0], expected)
  assert f.columns == ("m", "k") and f.output == "dense" and f.dim == 1


def test_lookup_ids_match_tf():
  f = features.LookupFeature("bucket", map_column="m", key_column="k", result="id",
                             hash_bucket_size=1000)
  vocab = features.LookupFeature("vocab", map_column="m", key_column="k", result="id",
                                 vocabulary=("12", "1", "3"))
  out = assert_twins_equal((f, vocab), {"m": _objects(MAPS), "k": _objects(KEYS)})
  plain = features.IdFeature("p", column="p", hash_bucket_size=1000)
  found = ["12", "007", "", "1", "5", "3", "4", "0x10", "2", ""]
  np.testing.assert_array_equal(out["ids"]["bucket"][:, 0], plain.ids(_objects(found)))
  np.testing.assert_array_equal(out["ids"]["vocab"][[0, 3, 5], 0], [0, 1, 2])
  assert f.output == "ids" and f.num_ids == 1000 and vocab.num_ids == 4


@pytest.mark.parametrize("bad, what", [("news", "whose entry 'news' has no ':'"),
                                       ("a:1|news:x", "whose entry 'news:x' holds no number"),
                                       ("a:|news:1", "whose entry 'a:' holds no number")])
def test_lookup_errors_name_the_row(bad, what):
  f = features.LookupFeature("clicks", map_column="m", key_column="k")
  assert_both_reject((f,), {"m": _objects(["a:1", bad]), "k": _objects(["a", "news"])},
                     rf"^day\.csv:3: column 'm' holds .*{what} \(feature 'clicks'\)")


# ---------------------------------------------------------------- all kinds, config, export

def all_kinds_config():
  """A config with every kind (and the options that change a kind's code path)."""
  return dict(
      user=dict(kind="id", hash_bucket_size=97),
      country=dict(kind="id", vocabulary=("de", "fr", "中文", ""), num_oov_buckets=2),
      age=dict(kind="numeric", mean=40.0, std=12.5),
      age_bucket=dict(kind="id", column="age", boundaries=(18.0, 30.0, 65.0)),
      income=dict(kind="numeric", log1p=True, min=0.0, max=12.0),
      item_num=dict(kind="identity", num_buckets=1000, out_of_range="default", default=1),
      embedding=dict(kind="numeric", dim=3, mean=0.5, std=2.0),
      tags=dict(kind="tag", max_len=3, weighted=True, hash_bucket_size=50),
      item_id=dict(kind="id", hash_bucket_size=200),
      hist_item=dict(kind="sequence", max_len=4, hash_bucket_size=200, table="item_id"),
      hist_cat=dict(kind="sequence", max_len=4, vocabulary=("c1", "c2"), aligned_with="hist_item"),
      user_country=dict(kind="combo", inputs=("user", "country"), hash_bucket_size=61),
      cat_clicks=dict(kind="lookup", map_column="clicks", key_column="item_cat", log1p=True),
      cat_bucket=dict(kind="lookup", map_column="clicks", key_column="item_cat", result="id",
                      hash_bucket_size=13))


IDS = ("user", "country", "age_bucket", "item_num", "tags", "item_id", "hist_item", "hist_cat",
       "user_country", "cat_bucket")


def experiment(model="deepfm"):
  import ml_collections
  config = ml_collections.ConfigDict()
  config.data = dict(train=("unused.csv",))
  config.label = dict(column="label")
  config.features = all_kinds_config()
  config.groups = dict(wide=dict(features=IDS, dim=1), deep=dict(features=IDS, dim=4))
  config.model = dict(name=model, hidden=(8,))
  return config_lib.experiment(config)


def raw_rows():
  n = 12
  pick = lambda values: _objects([values[i % len(values)] for i in range(n)])
  return {
      "user": pick(["", "u1", "中文", LONG, "007", " 5 ", "1e3", "😀"]),
      "country": pick(["de", "fr", "中文", "", "xx", "DE"]),
      "age": np.linspace(-3.0, 90.0, n),
      "income": np.geomspace(1.0, 1e5, n),
      "item_num": pick(["7", "007", " 5 ", "1e3", "", "99999", "0"]),
      "embedding": pick(["1|2|3", "0.5|-1| 7 ", "1e3|0x10|-0"]),
      "tags": pick(["", "a:0.5|b:2", "中文", f"{LONG}:3|x|y|z"]),
      "item_id": pick(["i1", "i2", "中文", ""]),
      "hist_item": pick(["", "i1|i2", "i3|i2|i1|i0|i9", "中文|"]),
      "hist_cat": pick(["", "c1|c2", "c2|c2|c1|c3|c1", "c1|"]),
      "clicks": pick(["c1:3|c2:12", "", "c2:007", "中文:5"]),
      "item_cat": pick(["c2", "c1", "c2", "中文", "c9"]),
  }


def test_config_builds_every_kind_and_input_and_export_see_its_columns():
  exp = experiment()
  kinds = {type(f).__name__ for f in exp.features}
  assert kinds == {"IdFeature", "IdentityFeature", "NumericFeature", "TagFeature",
                   "ComboFeature", "SequenceFeature", "LookupFeature"}
  assert set(features.KINDS) == {"id", "identity", "numeric", "tag", "combo", "sequence", "lookup"}
  assert features.dense_width(exp.features) == 1 + 1 + 3 + 1
  specs = export.serving_inputs(exp)
  assert set(specs) == set(raw_rows())
  assert {c for c, s in specs.items() if s.dtype == tf.float32} == {"age", "income"}


def test_transform_of_every_kind_matches_tf():
  exp = experiment()
  out = assert_twins_equal(exp.features, raw_rows())
  assert {name: v.shape[1] for name, v in out["ids"].items()} == dict(
      user=1, country=1, age_bucket=1, item_num=1, tags=3, item_id=1, hist_item=4, hist_cat=4,
      user_country=1, cat_bucket=1)
  assert out["dense"].shape == (12, 6)


def test_saved_model_with_every_kind_equals_jax_on_raw_rows(tmp_path):
  import jax
  from recjax.train import loop as train
  exp = experiment()
  state = train.init_state(exp, jax.random.key(3))
  # perturb the tables so that every id matters (the wide tables start at zero)
  state = state.replace(tables=jax.tree.map(
      lambda t: t + 0.3 * jax.random.normal(jax.random.key(t.size), t.shape), state.tables))
  columns = raw_rows()
  batch = features.transform(exp.features, columns)
  jax_probs = np.asarray(jax.nn.sigmoid(
      train.forward(exp, state.params, state.tables, batch)[exp.model.task]))
  directory = export.export(exp, state, tmp_path / "model")
  serve = tf.saved_model.load(str(directory)).signatures[export.SIGNATURE]
  tf_probs = serve(**_tf_columns(exp.features, columns))[export.OUTPUT].numpy()
  np.testing.assert_allclose(tf_probs, jax_probs, atol=1e-6)
  assert jax_probs.std() > 0.01
  with pytest.raises(tf.errors.InvalidArgumentError):    # a bad request fails, loudly
    bad = dict(columns, hist_cat=_objects(["c1"] * 12))
    serve(**_tf_columns(exp.features, bad))


@pytest.mark.parametrize("name, spec, match", [
    ("t", dict(kind="tag", hash_bucket_size=10), r"features\.t: max_len must be positive"),
    ("t", dict(kind="tag", max_len=2), r"features\.t: hash_bucket_size is 0 and there is no"),
    ("n", dict(kind="identity", num_buckets=10, out_of_range="clip"), r"features\.n: .*'clip'"),
    ("n", dict(kind="identity", num_buckets=10, default=10), r"features\.n: default 10"),
    ("x", dict(kind="numeric", min=1.0), r"features\.x: set both min and max"),
    ("x", dict(kind="numeric", min=1.0, max=1.0), r"features\.x: max must be greater"),
    ("x", dict(kind="numeric", min=0.0, max=1.0, std=2.0), r"features\.x: .*not both"),
    ("c", dict(kind="combo", inputs=("a",), hash_bucket_size=5), r"features\.c: .*two columns"),
    ("s", dict(kind="sequence", max_len=2, hash_bucket_size=5, keep="middle"), r"'middle'"),
    ("l", dict(kind="lookup", map_column="m", key_column="k", result="id"),
     r"features\.l: hash_bucket_size is 0 and there is no vocabulary"),
    ("l", dict(kind="lookup", map_column="m", key_column="k", hash_bucket_size=3),
     r'features\.l: .*for result "id"'),
    ("t", dict(kind="tag", max_len=2, hash_bucket_size=5, weight=True),
     r"features\.t\.weight: no such key; did you mean 'weighted'"),
])
def test_bad_feature_configs_name_the_key(name, spec, match):
  with pytest.raises(errors.ConfigError, match=match):
    features.build_feature(name, dict(spec), f"features.{name}", config_lib.build)


def test_a_column_read_as_numbers_and_as_strings_is_a_config_error():
  feats = (features.NumericFeature("age", column="age"),
           features.ComboFeature("x", inputs=("age", "country"), hash_bucket_size=5))
  with pytest.raises(errors.ConfigError, match=r"features\.x: reads column 'age' as strings, "
                                                r"but features\.age reads it as numbers"):
    features.check_groups(feats, ())


def test_aligned_sequences_must_agree_on_max_len():
  feats = (features.SequenceFeature("a", column="a", max_len=3, hash_bucket_size=5),
           features.SequenceFeature("b", column="b", max_len=4, hash_bucket_size=5,
                                    aligned_with="a"))
  with pytest.raises(errors.ConfigError, match=r"features\.b: aligned with 'a'"):
    features.check_groups(feats, ())
  with pytest.raises(errors.ConfigError, match=r"features\.b\.aligned_with: 'c' is not"):
    features.check_groups((dataclasses.replace(feats[1], aligned_with="c"),
                           features.IdFeature("c", hash_bucket_size=3)), ())
  lookup = features.LookupFeature("l", map_column="m", key_column="k")
  with pytest.raises(errors.ConfigError, match=r"groups\.g\.features: 'l' is numeric"):
    features.check_groups((lookup,), (features.Group("g", ("l",), dim=2),))


def test_vocabulary_file_is_read_at_validation(tmp_path):
  path = tmp_path / "vocab.txt"
  path.write_bytes("de\nfr\r\n中文\n\nlast".encode())
  f = features.TagFeature("t", column="t", max_len=2, vocabulary_file=str(path))
  assert f.vocabulary == ("de", "fr", "中文", "", "last") and f.num_ids == 6
  out = assert_twins_equal((f,), {"t": _objects(["de|fr", "中文|last", "|x", "fr\r"])})
  np.testing.assert_array_equal(out["ids"]["t"][:3], [[0, 1], [2, 4], [3, 5]])
  assert out["ids"]["t"][3, 0] == 5                     # "fr\r" is not "fr"
  path.write_text("a\nb\na\n")
  with pytest.raises(errors.ConfigError, match=r"features\.v: vocabulary_file .*vocab\.txt:3 "
                                                r"repeats 'a' \(line 1\)"):
    features.build_feature("v", dict(kind="id", vocabulary_file=str(path)), "features.v",
                           config_lib.build)
  with pytest.raises(errors.ConfigError, match=r"features\.v: vocabulary_file .*cannot be read"):
    features.build_feature("v", dict(kind="id", vocabulary_file=str(tmp_path / "no.txt")),
                           "features.v", config_lib.build)


def test_all_features_config_trains_in_smoke_mode_and_its_saved_model_matches_jax(tmp_path):
  import pyarrow as pa
  from recjax.input import synthetic
  from tests.conftest import ROOT, run_cli, summary_of
  spec = f"{ROOT / 'configs' / 'synthetic_all_features.py'}:smoke"
  exp = config_lib.experiment(config_lib.load(spec))
  assert {type(f) for f in exp.features} == set(features.KINDS.values())   # every kind
  workdir = tmp_path / "run"
  summary = summary_of(run_cli("train", "--config", spec, "--workdir", workdir,
                               "--config.train.progress_bar=False"))
  assert summary["steps"] == 20 and summary["eval"]["examples"] == 1024
  assert summary["eval"]["auc"] > 0.55                  # it learns from the teacher already
  predictions = tmp_path / "jax.csv"
  run_cli("predict", "--config", spec, "--workdir", workdir, "--input", "synthetic:eval",
          "--output", predictions)
  jax_probs = np.loadtxt(predictions, skiprows=1)
  # The raw eval rows as the source writes them, fed as a request carries them.
  table = synthetic.generate(exp.data.synthetic, "eval")
  inputs = export.serving_inputs(exp)
  feed = {c: tf.constant(table[c].to_numpy().astype(np.float32)) if s.dtype == tf.float32
          else tf.constant(table[c].cast(pa.string()).to_pylist(), tf.string)
          for c, s in inputs.items()}
  serve = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE]
  tf_probs = serve(**feed)[export.OUTPUT].numpy()
  assert tf_probs.shape == jax_probs.shape == (1024,)
  np.testing.assert_allclose(tf_probs, jax_probs, atol=1e-6)


def test_features_pickle_after_their_eager_tables_are_built():
  import pickle
  f = features.SequenceFeature("s", column="s", max_len=2, vocabulary=("a", "b"))
  columns = {"s": _objects(["a|b", "c", ""])}
  before = f.apply(columns, features.Problems())["ids"]
  copy = pickle.loads(pickle.dumps(f))        # as an input worker process receives it
  assert copy == f
  np.testing.assert_array_equal(copy.apply(columns, features.Problems())["ids"], before)


# ---------------------------------------------------------------- bad rows under "skip"

def _seq(items, cats):
  return {"hist_item": _objects(items), "hist_cat": _objects(cats)}


SKIPPED = {   # kind: (features, columns, {bad row: reason})
    "identity": ((features.IdentityFeature("n", column="n", num_buckets=1000),),
                 {"n": _objects(["1", "a", "2", "1000", "", "2.5", "7"])},
                 {1: "not_a_number", 3: "id_out_of_range", 4: "empty_value",
                  5: "id_out_of_range"}),
    "identity_default": ((features.IdentityFeature("n", column="n", num_buckets=10,
                                                   out_of_range="default"),),
                         {"n": _objects(["1", "2.5", "", "99"])}, {1: "id_out_of_range"}),
    "numeric_dim": ((features.NumericFeature("v", column="v", dim=3),),
                    {"v": _objects(["1|2|3", "1|2", "4|x|6", "7|8|9", "1|2|3|4"])},
                    {1: "wrong_value_count", 2: "not_a_number", 4: "wrong_value_count"}),
    "numeric_non_finite": ((features.NumericFeature("x", column="x", log1p=True),),
                           {"x": np.array([1.0, -2.0, 3.0])}, {1: "nan_or_inf"}),
    "tag": ((features.TagFeature("t", column="t", max_len=2, weighted=True,
                                 hash_bucket_size=10),),
            {"t": _objects(["a:1", "b:x|c:1", "c:inf", "d:2|e"])},
            {1: "not_a_number", 2: "nan_or_inf"}),
    "sequence": ((features.SequenceFeature("hist_item", max_len=3, hash_bucket_size=50),
                  features.SequenceFeature("hist_cat", max_len=3, hash_bucket_size=9,
                                           aligned_with="hist_item")),
                 _seq(["i1|i2", "i3", "", "i4|i5|i6|i7"], ["c1|c2", "c3|c4", "", "a|b|c|d"]),
                 {1: "misaligned_sequence"}),
    "lookup": ((features.LookupFeature("clicks", map_column="m", key_column="k"),),
               {"m": _objects(["a:1", "news", "a:x|b:2", "b:3"]),
                "k": _objects(["a", "news", "b", "b"])},
               {1: "bad_map_entry", 2: "not_a_number"}),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", list(SKIPPED))
def test_transform_reports_bad_rows_as_masks_and_good_rows_transform_as_alone(kind):
  feats, columns, bad = SKIPPED[kind]
  n = len(next(iter(columns.values())))
  found = features.Problems(lambda row: f"day.csv:{row + 2}", collect=True)
  out = features.transform(feats, columns, problems=found)
  masks = {}
  for problem in found.found:
    masks.setdefault(problem.reason, np.zeros(n, bool))
    masks[problem.reason] |= problem.mask
    assert f"{problem.message(int(np.argmax(problem.mask)))}"
  reported = {row: reason for reason, mask in masks.items() for row in np.flatnonzero(mask)}
  assert reported == bad
  good = np.setdiff1d(np.arange(n), list(bad))
  alone = features.transform(feats, {c: v[good] for c, v in columns.items()})
  for key in ("ids", "weights"):
    for name in alone[key]:
      np.testing.assert_array_equal(out[key][name][good], alone[key][name])
  np.testing.assert_array_equal(out["dense"][good], alone["dense"])
  with pytest.raises(errors.DataError, match=rf"^day\.csv:{min(bad) + 2}: "):
    features.transform(feats, columns, where=lambda row: f"day.csv:{row + 2}")

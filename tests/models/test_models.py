"""Tests for recjax.layers.interaction and recjax.models.

Layers against their papers' formulas written out naively; every registered model (and one
defined outside the package, named by a config) trained 3 steps from its `tiny` preset on a
few hundred Adult rows through `train.train_and_evaluate`, evaluated, exported, and the
reloaded SavedModel's probabilities compared with JAX's on the same raw rows.
"""

import csv
import gzip
import itertools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax import sharding
from recjax.errors import ConfigError
from recjax.export import saved_model as export
from recjax.input import pipeline as input_lib
from recjax.layers import interaction as layers
from recjax.models import MODELS, TINY
from recjax.train import loop as train
from tests import external_model
from tests.conftest import ADULT_CONFIG, ROOT

B, F_WIDE, F_DEEP, D, DN = 5, 4, 3, 6, 2
FIRST_ORDER = ("lr", "fm", "wide_deep", "deepfm", "xdeepfm", "fibinet")
EXTERNAL = "tests.external_model:IPNN"
TINY_FEATURES = ("age", "hours_per_week", "capital_gain", "gender", "education", "age_bucket")


def _normal(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def nn_relu(x):
  return jnp.maximum(x, 0)


def _init_apply(layer, *inputs):
  params = layer.init(jax.random.key(0), *inputs)
  return params["params"] if params else {}, layer.apply(params, *inputs)


# ---- layers -------------------------------------------------------------------------------

def test_fm_equals_sum_over_pairs():
  embeddings = np.random.default_rng(0).normal(size=(B, 5, D)).astype(np.float32)
  out = layers.FM().apply({}, jnp.asarray(embeddings))
  e = embeddings.astype(np.float64)
  expected = [sum(e[b, i] @ e[b, j] for i, j in itertools.combinations(range(5), 2))
              for b in range(B)]
  assert out.shape == (B,)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_fm_of_one_field_is_zero():
  out = layers.FM().apply({}, jnp.ones((2, 1, 3)))
  np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_mlp_last_layer_linear_only_when_asked():
  x = jnp.ones((B, 3))
  for linear_out in (False, True):
    mlp = layers.MLP((4, 2), linear_out=linear_out)
    params = mlp.init(jax.random.key(0), x)
    assert params["params"]["dense_1"]["kernel"].shape == (4, 2)
    # With every weight and bias negative, a ReLU output is 0 and a linear one is negative.
    out = mlp.apply(jax.tree.map(lambda p: -jnp.abs(p) - 0.1, params), x)
    assert bool(jnp.all(out >= 0)) != linear_out


def test_dot_interaction_lists_pairs_i_before_j():
  x = _normal(0, B, 4, D)
  _, out = _init_apply(layers.DotInteraction(), x)
  expected = [[x[b, i] @ x[b, j] for i, j in itertools.combinations(range(4), 2)]
              for b in range(B)]
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_cross_net_v1_layer_formula():
  x0 = _normal(1, B, 7)
  params, out = _init_apply(layers.CrossNet(2), x0)
  x = x0
  for i in range(2):
    w, b = params[f"w_{i}"]["kernel"][:, 0], params[f"b_{i}"]
    x = x0 * (x @ w)[:, None] + b + x
  np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("low_rank", [0, 3])
def test_cross_net_v2_layer_formula(low_rank):
  x0 = _normal(2, B, 7)
  params, out = _init_apply(layers.CrossNetV2(2, low_rank=low_rank), x0)
  x = x0
  for i in range(2):
    if low_rank:
      u = params[f"u_{i}"]
      w, bias = params[f"v_{i}"]["kernel"] @ u["kernel"], u["bias"]
      assert params[f"v_{i}"]["kernel"].shape == (7, low_rank)
    else:
      w, bias = params[f"w_{i}"]["kernel"], params[f"w_{i}"]["bias"]
    x = x0 * (x @ w + bias) + x
  np.testing.assert_allclose(out, x, rtol=1e-5, atol=1e-5)


def test_cross_net_v2_mixture_of_experts_is_a_convex_mix():
  x0 = _normal(3, B, 6)
  params, out = _init_apply(layers.CrossNetV2(1, low_rank=2, num_experts=3), x0)
  experts = []
  for e in range(3):
    h = jnp.tanh(jnp.tanh(x0 @ params[f"v_0_{e}"]["kernel"]) @ params[f"c_0_{e}"]["kernel"])
    experts.append(x0 * (h @ params[f"u_0_{e}"]["kernel"] + params[f"u_0_{e}"]["bias"]))
  gates = jax.nn.softmax(jnp.concatenate(
      [x0 @ params[f"gate_0_{e}"]["kernel"] for e in range(3)], -1), -1)
  expected = sum(gates[:, e:e + 1] * experts[e] for e in range(3)) + x0
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="needs low_rank"):
    _init_apply(layers.CrossNetV2(1, num_experts=2), x0)


def test_cin_layers_follow_the_paper_with_split_half():
  x0 = _normal(4, B, 3, D)
  params, out = _init_apply(layers.CIN((4, 2), split_half=True), x0)
  assert out.shape == (B, 2 + 2)                     # half of layer 0, all of layer 1
  x, pooled = np.asarray(x0, np.float64), []
  for k, size in enumerate((4, 2)):
    w, b = np.asarray(params[f"w_{k}"], np.float64), np.asarray(params[f"b_{k}"], np.float64)
    maps = np.zeros((B, size, D))
    for h, m, s in itertools.product(range(x.shape[1]), range(3), range(size)):
      maps[:, s] += w[h, m, s] * x[:, h] * np.asarray(x0, np.float64)[:, m]
    maps += b[:, None]
    x, direct = (maps[:, :2], maps[:, 2:]) if k == 0 else (maps, maps)
    pooled.append(direct.sum(-1))
  np.testing.assert_allclose(out, np.concatenate(pooled, -1), rtol=1e-4, atol=1e-5)


def test_field_self_attention_is_permutation_equivariant_over_fields():
  x = _normal(5, B, 4, D)
  layer = layers.FieldSelfAttention(num_heads=2, head_dim=3)
  params = layer.init(jax.random.key(0), x)
  out = layer.apply(params, x)
  assert out.shape == (B, 4, 6) and bool(jnp.all(out >= 0))
  order = np.array([2, 0, 3, 1])
  np.testing.assert_allclose(layer.apply(params, x[:, order]), out[:, order], rtol=1e-5, atol=1e-5)
  # one field alone attends only to itself: out = ReLU(W_v e + W_res e)
  p = params["params"]
  one = x[:, :1]
  expected = jnp.einsum("bfd,dhk->bfhk", one, p["value"]["kernel"] + p["residual"]["kernel"])
  np.testing.assert_allclose(layer.apply(params, one), nn_relu(expected).reshape(B, 1, 6),
                             rtol=1e-5, atol=1e-5)


def test_senet_reweights_each_field_by_its_excitation():
  x = _normal(6, B, 6, D)
  params, out = _init_apply(layers.SENet(reduction_ratio=3), x)
  z = x.mean(-1)
  a = nn_relu(nn_relu(z @ params["squeeze"]["kernel"]) @ params["excite"]["kernel"])
  assert params["squeeze"]["kernel"].shape == (6, 2)
  np.testing.assert_allclose(out, x * a[:, :, None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("field_type", ["all", "each", "interaction"])
def test_bilinear_interaction_formula(field_type):
  x = _normal(7, B, 3, D)
  params, out = _init_apply(layers.Bilinear(field_type), x)
  w = params["kernel"]
  expected = []
  for p, (i, j) in enumerate(itertools.combinations(range(3), 2)):
    kernel = {"all": w, "each": w[i] if w.ndim == 3 else w, "interaction": w[p] if w.ndim == 3 else w}[field_type]
    expected.append((x[:, i] @ kernel) * x[:, j])
  np.testing.assert_allclose(out, jnp.stack(expected, 1), rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="field_type 'some'"):
    _init_apply(layers.Bilinear("some"), x)


def test_mask_block_formula():
  v_emb, x = _normal(8, B, 10), _normal(9, B, 6)
  params, out = _init_apply(layers.MaskBlock(4, aggregation_ratio=2.0), v_emb, x)
  assert params["mask_aggregation"]["kernel"].shape == (10, 20)
  dense = lambda p, v: v @ p["kernel"] + p.get("bias", 0)
  mask = dense(params["mask_projection"], nn_relu(dense(params["mask_aggregation"], v_emb)))
  h = (mask * x) @ params["hidden"]["kernel"]
  mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
  ln = params["layer_norm"]
  expected = nn_relu((h - mean) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"])
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_numeric_fields_scale_one_vector_per_feature():
  dense = _normal(10, B, 3)
  params, out = _init_apply(layers.NumericFields(4), dense)
  np.testing.assert_allclose(out, dense[:, :, None] * params["embedding"][None], rtol=1e-6)


# ---- models on random inputs ----------------------------------------------------------------

def _inputs(seed):
  rng = np.random.default_rng(seed)
  embedded = {"wide": jnp.asarray(rng.normal(size=(B, F_WIDE, 1)), jnp.float32),
              "deep": jnp.asarray(rng.normal(size=(B, F_DEEP, D)), jnp.float32)}
  return embedded, jnp.asarray(rng.normal(size=(B, DN)), jnp.float32)


# Models that need other data than Adult's rows (sequences, user-item pairs, several labels)
# train, evaluate and export from their tiny presets in their own test files.
ELSEWHERE = {"din": "test_sequence_models", "bst": "test_sequence_models",
             "dssm": "test_recall", "sasrec": "test_recall",
             "shared_bottom": "test_multitask_models", "mmoe": "test_multitask_models",
             "ple": "test_multitask_models", "esmm": "test_multitask_models"}
RANKING = sorted(set(MODELS) - set(ELSEWHERE))


def test_every_model_has_a_tiny_preset_and_a_train_evaluate_export_test():
  assert set(MODELS) == set(TINY) >= {
      "lr", "fm", "wide_deep", "dnn", "deepfm", "xdeepfm", "dcn", "dcnv2", "autoint",
      "fibinet", "masknet", "dlrm"}
  for name in MODELS:
    assert isinstance(TINY[name](), MODELS[name])
  for name in RANKING:
    assert TINY[name]().task == "label"
  for name, module in ELSEWHERE.items():
    assert f'"{name}"' in (Path(__file__).parent / f"{module}.py").read_text(), (name, module)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_first_order_part_is_additive(name):
  # The 1-dim id weights of the wide / first-order group enter the logit as a plain sum.
  model = TINY[name]()
  embedded, dense = _inputs(3)
  params = model.init(jax.random.key(0), embedded, dense)
  delta = jnp.asarray(np.random.default_rng(4).normal(size=(B, F_WIDE, 1)), jnp.float32)
  before = model.apply(params, embedded, dense)["label"]
  after = model.apply(params, {**embedded, "wide": embedded["wide"] + delta}, dense)["label"]
  np.testing.assert_allclose(after - before, jnp.sum(delta, (1, 2)), rtol=1e-5, atol=1e-5)


def test_fm_model_is_rendles_fm_with_numeric_fields():
  model = MODELS["fm"]()
  embedded, dense = _inputs(5)
  params = model.init(jax.random.key(0), embedded, dense)["params"]
  out = model.apply({"params": params}, embedded, dense)["label"]
  v = jnp.concatenate([embedded["deep"], dense[:, :, None] * params["sparse_arch"]["embedding"]], 1)
  linear = params["first_order"]["dense"]
  pairs = sum(jnp.sum(v[:, i] * v[:, j], -1) for i, j in itertools.combinations(range(v.shape[1]), 2))
  expected = embedded["wide"].sum((1, 2)) + dense @ linear["kernel"][:, 0] + linear["bias"][0] + pairs
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_dlrm_interacts_the_bottom_output_with_every_embedding():
  model = TINY["dlrm"]()
  embedded, dense = _inputs(6)
  params = model.init(jax.random.key(0), embedded, dense)["params"]
  # bottom MLP ends in the embedding dim; top MLP reads z (D) and C(F+1, 2) dot products
  assert params["dense_arch"]["dense_1"]["kernel"].shape == (8, D)
  assert params["top_arch"]["dense_0"]["kernel"].shape == (D + (F_DEEP + 1) * F_DEEP // 2, 16)


def test_structure_options_change_the_wiring():
  embedded, dense = _inputs(7)
  stacked = MODELS["dcnv2"](hidden=(4,), cross_layers=1).init(jax.random.key(0), embedded, dense)
  parallel = MODELS["dcnv2"](hidden=(4,), cross_layers=1, structure="parallel").init(
      jax.random.key(0), embedded, dense)
  n = F_DEEP * D + DN
  assert stacked["params"]["over_arch"]["kernel"].shape == (4, 1)
  assert parallel["params"]["over_arch"]["kernel"].shape == (n + 4, 1)
  for model in (MODELS["dcnv2"](structure="tower"), MODELS["masknet"](structure="tower")):
    with pytest.raises(ConfigError, match="model.structure: 'tower' is not one of"):
      model.check({})                  # at validation, before any data (recjax.models.checks)
  para = MODELS["masknet"](block_sizes=(3, 5), structure="parallel", hidden=(4,))
  assert para.init(jax.random.key(0), embedded, dense)["params"]["dense_arch"]["dense_0"][
      "kernel"].shape == (8, 4)


def test_model_fields_route_groups():
  model = MODELS["wide_deep"](hidden=(4,), wide_group="w", deep_group="d", task="click")
  embedded, dense = _inputs(5)
  renamed = {"w": embedded["wide"], "d": embedded["deep"]}
  params = model.init(jax.random.key(0), renamed, dense)
  out = model.apply(params, renamed, dense)
  assert set(out) == {"click"} and out["click"].shape == (B,)
  assert params["params"]["dense_arch"]["dense_0"]["kernel"].shape == (F_DEEP * D + DN, 4)


# ---- every model from a config: train 3 steps, evaluate, export, serve ----------------------

@pytest.fixture(scope="module")
def tiny_adult(tmp_path_factory):
  """The first 300 training rows and 200 test rows of Adult, as gzipped CSV files."""
  folder = tmp_path_factory.mktemp("tiny_adult")
  files = {}
  for split, rows in (("adult.data.gz", 300), ("adult.test.gz", 200)):
    with gzip.open(ROOT / "data" / "adult" / split, "rt") as f:
      lines = [line for line in f if line.count(",") == 14][:rows]
    files[split] = folder / split
    with gzip.open(files[split], "wt") as f:
      f.writelines(lines)
  return files


def _tiny_experiment(name, files, preset):
  config = config_lib.load(ADULT_CONFIG)
  for item in (f"data.train=('{files['adult.data.gz']}',)", f"data.eval=('{files['adult.test.gz']}',)",
               "train.steps=3", "train.batch_size=64", "train.eval_batch_size=128",
               "train.progress_bar=False", "train.checkpoint_every=1000"):
    config_lib.override(config, item)
  with config.unlocked():
    # a few features of every kind keep the tables (and the step's compile time) small
    config.features = {k: v for k, v in config.features.items() if k in TINY_FEATURES}
    for group in config.groups.values():
      group.features = tuple(f for f in group.features if f in TINY_FEATURES)
    config.model = dict(name=name, **preset.keywords)
  return config_lib.experiment(config)


def _raw_columns(experiment, file):
  specs = export.serving_inputs(experiment)
  names = config_lib.load(ADULT_CONFIG).data.columns
  with gzip.open(file, "rt") as f:
    rows = [[v.strip() for v in r] for r in csv.reader(f) if r]
  return {c: tf.constant([float(r[names.index(c)]) if spec.dtype == tf.float32 else r[names.index(c)]
                          for r in rows], spec.dtype)
          for c, spec in specs.items()}


@pytest.mark.parametrize("name", RANKING + [EXTERNAL])
def test_model_trains_evaluates_and_exports_from_its_tiny_preset(name, tiny_adult, tmp_path):
  preset = external_model.tiny if name == EXTERNAL else TINY[name]
  experiment = _tiny_experiment(name, tiny_adult, preset)
  assert type(experiment.model).__name__ == preset.func.__name__
  summary = train.train_and_evaluate(experiment, tmp_path)
  assert summary["steps"] == 3 and summary["eval"]["examples"] == 200
  assert 0.0 <= summary["eval"]["auc"] <= 1.0

  mesh = sharding.make_mesh()
  state = train.restore_state(experiment, tmp_path, mesh)
  assert int(state.step) == 3
  jax_probs = train.predict(experiment, state, input_lib.load_split(experiment, "eval"), mesh)[
      experiment.tasks[0].name]
  serve = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE]
  tf_probs = serve(**_raw_columns(experiment, tiny_adult["adult.test.gz"]))[export.OUTPUT].numpy()
  assert tf_probs.shape == jax_probs.shape == (200,)
  assert np.max(np.abs(tf_probs - jax_probs)) <= 1e-5
  assert np.all(np.isfinite(jax_probs)) and jax_probs.std() > 1e-4   # scores depend on the row


def test_config_names_an_external_model_by_import_path():
  cls = config_lib.model_class(EXTERNAL)
  assert cls is external_model.IPNN
  config = config_lib.load(ADULT_CONFIG)
  config_lib.override(config, f"model.name={EXTERNAL}")
  config_lib.override(config, "model.hidden=(8,4)")     # the external model's own field
  experiment = config_lib.experiment(config)
  assert experiment.model == external_model.IPNN(hidden=(8, 4))


@pytest.mark.parametrize("name, message", [
    ("no_such_pkg.models:Net", "model.name: cannot import 'no_such_pkg.models'"),
    ("recjax.layers.interaction:Nothing", "model.name: recjax.layers.interaction has no Flax module class 'Nothing'"),
    ("recjax.layers.interaction:MLP", "model.name: recjax.layers.interaction:MLP has no `task` or `tasks` field"),
    ("dcnv3", "model.name: 'dcnv3' is not a model; did you mean 'dcnv2'"),
])
def test_bad_model_names_are_config_errors(name, message):
  config = config_lib.load(ADULT_CONFIG)
  config_lib.override(config, f"model.name={name}")
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    config_lib.experiment(config)

"""Tests for recjax.layers.multitask and the multi-task models (shared-bottom, MMoE, PLE, ESMM).

Model level: MMoE and PLE outputs against a naive re-computation from the experts, gates and
towers read out of the params; ESMM's CTCVR identity and that the CTR loss never reaches the
CVR tower. From a config: each tiny preset trained 3 steps on the census (or Ali-CCP) sample
through `train.train_and_evaluate`, both tasks evaluated, and the SavedModel's outputs
compared with JAX's on the same raw rows.
"""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.export import saved_model as export
from recjax.input import pipeline as input_lib
from recjax.datasets import paths
from recjax.errors import ConfigError
from recjax.layers import multitask as multitask_layers
from recjax import sharding
from recjax.train import loop as train
from recjax.models import TINY
from recjax.models import dnn
from recjax.models import esmm
from recjax.models import mmoe
from recjax.models import ple
from recjax.models import shared_bottom
from tests.conftest import ROOT

B, F, D, DN = 6, 3, 4, 2
TASKS = ("income", "never_married")
MULTI = {"shared_bottom": shared_bottom, "mmoe": mmoe, "ple": ple}


def _inputs(seed):
  rng = np.random.default_rng(seed)
  return ({"deep": jnp.asarray(rng.normal(size=(B, F, D)), jnp.float32)},
          jnp.asarray(rng.normal(size=(B, DN)), jnp.float32))


def _relu(x):
  return np.maximum(x, 0)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _dense(p, x):
  return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def _experts(p, x):
  """[B, N] -> [B, E, H], expert by expert."""
  out = []
  for e in range(p["kernel_0"].shape[0]):
    h = x
    for i in range(len(p) // 2):
      h = _relu(h @ np.asarray(p[f"kernel_{i}"][e], np.float64) + np.asarray(p[f"bias_{i}"][e]))
    out.append(h)
  return np.stack(out, 1)


def _gate(p, x, experts):
  g = _softmax(_dense(p["dense"], x))
  return np.einsum("be,beh->bh", g, experts)


def _tower(p, x):
  for i in range(len(p) - 1):
    x = _relu(_dense(p[f"dense_{i}"], x))
  return _dense(p["logit"], x)[:, 0]


def _x(embedded, dense):
  return np.concatenate([np.asarray(embedded["deep"]).reshape(B, -1), np.asarray(dense)], -1
                        ).astype(np.float64)


# ---- shapes and fields ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MULTI))
def test_outputs_are_one_logit_per_task(name):
  model = MULTI[name].tiny(tasks=TASKS)
  embedded, dense = _inputs(0)
  params = model.init(jax.random.key(0), embedded, dense)
  out = model.apply(params, embedded, dense)
  assert set(out) == set(TASKS)
  for logits in out.values():
    assert logits.shape == (B,) and logits.dtype == jnp.float32
  assert not np.allclose(out["income"], out["never_married"])    # the towers differ


def test_esmm_outputs_ctr_ctcvr_and_cvr():
  model = esmm.tiny(deep_group="d", tasks=("click", "buy"), cvr_output="cvr")
  embedded, dense = _inputs(1)
  out = model.apply(model.init(jax.random.key(0), {"d": embedded["deep"]}, dense),
                    {"d": embedded["deep"]}, dense)
  assert set(out) == {"click", "buy", "cvr"} and all(v.shape == (B,) for v in out.values())


@pytest.mark.parametrize("name, tasks", [("mmoe", ()), ("ple", ("a", "a")), ("esmm", ("ctr",)),
                                         ("esmm", ("ctr", "cvr"))])
def test_bad_task_lists_are_errors(name, tasks):
  module = {**MULTI, "esmm": esmm}[name]
  with pytest.raises(ConfigError, match="model.tasks: "):      # at validation, before any data
    module.tiny(tasks=tasks).check({})


def test_ple_needs_a_level():
  with pytest.raises(ConfigError, match="model.levels: 0 is less than 1"):
    ple.tiny(levels=0).check({})


def test_shared_bottom_with_one_task_is_a_dnn_shape_wise():
  embedded, dense = _inputs(3)
  sb = shared_bottom.SharedBottom(bottom=(16, 8), tower=(4,), tasks=("label",))
  net = dnn.DNN(hidden=(16, 8, 4))
  sb_params = sb.init(jax.random.key(0), embedded, dense)["params"]
  dnn_params = net.init(jax.random.key(0), embedded, dense)["params"]
  shapes = lambda p: [x.shape for x in jax.tree.leaves(p)]
  assert sorted(shapes(sb_params)) == sorted(shapes(dnn_params))
  assert sb.apply({"params": sb_params}, embedded, dense)["label"].shape == (B,)


def test_shared_bottom_formula():
  model = shared_bottom.tiny(tasks=TASKS)
  embedded, dense = _inputs(4)
  params = model.init(jax.random.key(0), embedded, dense)["params"]
  out = model.apply({"params": params}, embedded, dense)
  bottom = _relu(_dense(params["dense_arch"]["dense_0"], _x(embedded, dense)))
  for t in TASKS:
    np.testing.assert_allclose(out[t], _tower(params[f"tower_{t}"], bottom), rtol=1e-5, atol=1e-5)


# ---- MMoE and PLE against naive re-computation ------------------------------------------

def _gate_weights(model, params, embedded, dense):
  _, state = model.apply(params, embedded, dense, mutable=["intermediates"])
  return jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]


def test_mmoe_gates_are_softmaxes_and_output_matches_experts():
  model = mmoe.MMoE(num_experts=4, expert_hidden=(5, 3), tower=(2,), tasks=TASKS)
  embedded, dense = _inputs(5)
  variables = model.init(jax.random.key(0), embedded, dense)
  params = variables["params"]
  assert params["experts"]["kernel_0"].shape == (4, F * D + DN, 5)
  weights = _gate_weights(model, {"params": params}, embedded, dense)
  assert len(weights) == len(TASKS)
  for _, w in weights:
    assert w.shape == (B, 4) and bool(jnp.all(w >= 0))
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)

  out = model.apply({"params": params}, embedded, dense)
  x = _x(embedded, dense)
  experts = _experts(params["experts"], x)
  for t in TASKS:
    expected = _tower(params[f"tower_{t}"], _gate(params[f"gate_{t}"], x, experts))
    np.testing.assert_allclose(out[t], expected, rtol=1e-5, atol=1e-5)


def test_ple_matches_progressive_extraction_written_out():
  model = ple.PLE(levels=2, num_specific=2, num_shared=3, expert_hidden=(4,), tower=(3,),
                  tasks=TASKS)
  embedded, dense = _inputs(6)
  params = model.init(jax.random.key(0), embedded, dense)["params"]
  # gates: 2 tasks at each level + the shared gate below the top level, each a softmax
  weights = dict((jax.tree_util.keystr(k), w)
                 for k, w in _gate_weights(model, {"params": params}, embedded, dense))
  assert len(weights) == 5
  for key, w in weights.items():
    assert w.shape[1] == (2 * 2 + 3 if "gate_shared" in key else 2 + 3)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  assert "gate_shared" not in params["level_1"]                  # the top level has none

  x = _x(embedded, dense)
  inputs, shared = {t: x for t in TASKS}, x
  for level in range(2):
    p = params[f"level_{level}"]
    shared_experts = _experts(p["experts_shared"], shared)
    own = {t: _experts(p[f"experts_{t}"], inputs[t]) for t in TASKS}
    new = {t: _gate(p[f"gate_{t}"], inputs[t], np.concatenate([own[t], shared_experts], 1))
           for t in TASKS}
    if level == 0:
      shared = _gate(p["gate_shared"], shared,
                     np.concatenate([own[t] for t in TASKS] + [shared_experts], 1))
    inputs = new
  out = model.apply({"params": params}, embedded, dense)
  for t in TASKS:
    np.testing.assert_allclose(out[t], _tower(params[f"tower_{t}"], inputs[t]),
                               rtol=1e-5, atol=1e-5)


# ---- ESMM --------------------------------------------------------------------------------

def test_ctcvr_logit_is_the_product_of_probabilities_and_stays_finite():
  a = jnp.asarray([-30.0, -5.0, -1.0, 0.0, 0.5, 3.0, 12.0, 40.0, 90.0, 200.0])
  b = jnp.asarray([20.0, -3.0, 2.0, 0.0, -0.5, 4.0, 15.0, 35.0, -90.0, 300.0])
  logit = esmm.ctcvr_logit(a, b)
  assert bool(jnp.all(jnp.isfinite(logit)))
  np.testing.assert_allclose(jax.nn.sigmoid(logit), jax.nn.sigmoid(a) * jax.nn.sigmoid(b),
                             rtol=1e-6, atol=1e-6)
  # the log-probabilities too, where float32 products underflow or round to 1
  np.testing.assert_allclose(jax.nn.log_sigmoid(logit),
                             jax.nn.log_sigmoid(a) + jax.nn.log_sigmoid(b), rtol=1e-5, atol=1e-6)
  grads = jax.vmap(jax.grad(lambda u, v: esmm.ctcvr_logit(u, v), (0, 1)))(a, b)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def _bce(logits, labels):
  return jnp.mean(jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits))))


def test_esmm_ctcvr_is_ctr_times_cvr_and_the_ctr_loss_misses_the_cvr_tower():
  model = esmm.tiny()
  embedded, dense = _inputs(7)
  params = model.init(jax.random.key(0), embedded, dense)["params"]
  out = model.apply({"params": params}, embedded, dense)
  np.testing.assert_allclose(jax.nn.sigmoid(out["ctcvr"]),
                             jax.nn.sigmoid(out["ctr"]) * jax.nn.sigmoid(out["cvr"]), atol=1e-6)
  np.testing.assert_allclose(out["cvr"], _tower(params["cvr_tower"], _x(embedded, dense)),
                             rtol=1e-5, atol=1e-5)

  labels = jnp.asarray([1, 0, 1, 0, 0, 1], jnp.float32)

  def loss(p, emb, task):
    return _bce(model.apply({"params": p}, emb, dense)[task], labels)

  ctr_grads, ctr_emb = jax.grad(loss, (0, 1))(params, embedded, "ctr")
  assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(ctr_grads["cvr_tower"]))
  assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(ctr_grads["ctr_tower"]))
  ctcvr_grads, ctcvr_emb = jax.grad(loss, (0, 1))(params, embedded, "ctcvr")
  # CTCVR trains both towers and, with CTR, the shared embeddings
  for tower in ("ctr_tower", "cvr_tower"):
    assert float(jnp.abs(ctcvr_grads[tower]["logit"]["kernel"]).max()) > 0
  assert float(jnp.abs(ctr_emb["deep"]).max()) > 0 and float(jnp.abs(ctcvr_emb["deep"]).max()) > 0


# ---- from a config: train 3 steps, evaluate both tasks, export, serve ----------------------

SAMPLES = paths.shared("small_samples")           # $RECJAX_DATA, by default ../shared/data
CENSUS_SAMPLE = SAMPLES / "deepctr_census-income.sample"
ALICCP_EVAL = SAMPLES / "torchrechub_ali_ccp_val_sample.csv"
# a few features of each kind keep the tables and the step's compile time small
CENSUS_FEATURES = ("education", "sex", "det_hh_summ", "class_worker", "age", "weeks_worked",
                   "capital_gains")


def _tiny_experiment(name):
  if name == "esmm":
    spec, sample = "aliccp_esmm.py", ALICCP_EVAL
  else:
    spec, sample = f"census_multitask.py:{name},smoke", CENSUS_SAMPLE
  if not sample.exists():
    pytest.skip(f"{sample} is absent (the shared data folder is not mounted)")
  config = config_lib.load(str(ROOT / "configs" / spec))
  for item in ("train.steps=3", "train.batch_size=32", "train.progress_bar=False"):
    config_lib.override(config, item)
  with config.unlocked():
    if name != "esmm":
      config.features = {k: v for k, v in config.features.items() if k in CENSUS_FEATURES}
      config.groups.deep.features = tuple(f for f in config.groups.deep.features
                                          if f in CENSUS_FEATURES)
    config.model = dict(name=name, tasks=tuple(config.model.tasks), **TINY[name].keywords)
  return config_lib.experiment(config)


def _raw_rows(experiment):
  """Every row of the file that the eval split is drawn from, as raw serving columns."""
  data = experiment.data
  file = data.eval[0] if data.eval else data.train[0]
  with open(file, newline="") as f:
    rows = [[v.strip() for v in row] for row in csv.reader(f) if row]
  names = rows.pop(0) if data.header else list(data.columns)
  specs = export.serving_inputs(experiment)
  return file, {c: tf.constant([float(r[names.index(c)]) if spec.dtype == tf.float32
                                else r[names.index(c)] for r in rows], spec.dtype)
                for c, spec in specs.items()}


@pytest.mark.parametrize("name", ["shared_bottom", "mmoe", "ple", "esmm"])
def test_tiny_preset_trains_evaluates_and_exports(name, tmp_path):
  experiment = _tiny_experiment(name)
  summary = train.train_and_evaluate(experiment, tmp_path)
  assert summary["steps"] == 3
  for task in experiment.tasks:
    assert 0.0 <= summary["eval"][f"{task.name}/auc"] <= 1.0
    assert summary["eval"][f"{task.name}/examples"] > 0

  # JAX and the SavedModel on every row of the file (not only the held-out half)
  file, columns = _raw_rows(experiment)
  whole = dataclasses.replace(experiment, data=dataclasses.replace(
      experiment.data, eval=(file,), eval_fraction=0.0))
  mesh = sharding.make_mesh()
  state = train.restore_state(whole, tmp_path, mesh)
  jax_out = train.predict(whole, state, input_lib.load_split(whole, "eval"), mesh)
  served = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE](**columns)
  assert set(served) == {t.name for t in experiment.tasks}
  rows = len(next(iter(columns.values())))
  for task in experiment.tasks:
    tf_out = served[task.name].numpy()
    assert tf_out.shape == jax_out[task.name].shape == (rows,)
    assert np.max(np.abs(tf_out - jax_out[task.name])) <= 1e-5
    assert np.all(np.isfinite(tf_out)) and tf_out.std() > 1e-4     # scores depend on the row
  if name == "esmm":   # served pCTCVR = pCTR x pCVR
    np.testing.assert_allclose(served["ctcvr"], served["ctr"] * served["cvr"], atol=1e-6)

"""Tests for recjax.layers.sequence and the sequence models DIN and BST.

Layers against their papers' formulas written out naively, padding that must not matter
(history positions beyond a user's list change nothing), and each model trained 3 steps from
its `tiny` preset on the synthetic behaviour-sequence source (configs/synthetic_din.py, the
history reading the candidate's tables through `tables_from`), evaluated, exported, and the
reloaded SavedModel's probabilities compared with JAX's on the same raw rows.
"""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.datasets import amazon
from recjax.export import saved_model as export
from recjax.input import pipeline as input_lib
from recjax.layers import sequence as sequence_layers
from recjax import sharding
from recjax.input import synthetic
from recjax.train import loop as train
from recjax.models import MODELS, TINY
from tests.conftest import ROOT
from tests.models.test_models import _init_apply, _normal, nn_relu

CONFIG = str(ROOT / "configs" / "synthetic_din.py")
B, L, D = 4, 5, 3
MASK = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
                np.float32)          # the last user has no history at all


def _sequence_inputs(seed, dense_width=2):
  """target [B, 2, D] (item, category), history [B, 2, L, D] zero at padding, its mask, a
  profile group and dense features."""
  history = np.asarray(_normal(seed + 1, B, 2, L, D)) * MASK[:, None, :, None]
  embedded = {"target": _normal(seed, B, 2, D), "history": jnp.asarray(history),
              "history_mask": jnp.asarray(MASK), "profile": _normal(seed + 2, B, 2, D)}
  return embedded, _normal(seed + 3, B, dense_width)


def _garbage_at_padding(embedded, seed):
  """The same rows with other values at the history's padding positions (as a lookup that
  did not zero them would give)."""
  noise = np.asarray(_normal(seed, B, 2, L, D)) * (1 - MASK)[:, None, :, None]
  return {**embedded, "history": embedded["history"] + noise}


# ---- layers -------------------------------------------------------------------------------

def test_prelu_and_dice_formulas():
  s = _normal(0, B, 6)
  params, out = _init_apply(sequence_layers.PReLU(), s)
  np.testing.assert_allclose(out, np.where(s > 0, s, 0.25 * s), rtol=1e-6)
  dice = sequence_layers.Dice()
  params = dice.init(jax.random.key(0), s)
  params = jax.tree.map(lambda p: p + _normal(1, *p.shape), params)   # away from the init
  p = params["params"]
  gate = jax.nn.sigmoid((s - p["center"]) * p["scale"])
  np.testing.assert_allclose(dice.apply(params, s), gate * s + (1 - gate) * p["alpha"] * s,
                             rtol=1e-5, atol=1e-6)
  # a row's activation does not depend on the other rows of its batch
  np.testing.assert_allclose(dice.apply(params, s[:1]), dice.apply(params, s)[:1], rtol=1e-6)


def test_target_attention_is_the_papers_activation_unit_without_softmax():
  q, keys = _normal(2, B, 4), _normal(3, B, L, 4)
  layer = sequence_layers.TargetAttention((5,), "relu")
  params, (interest, weights) = _init_apply(layer, q, keys, jnp.asarray(MASK))
  qb = jnp.broadcast_to(q[:, None], keys.shape)
  x = jnp.concatenate([qb, keys, qb - keys, qb * keys], -1)
  mlp, out = params["mlp"]["dense_0"], params["weight"]
  expected_w = (nn_relu(x @ mlp["kernel"] + mlp["bias"]) @ out["kernel"] + out["bias"])[..., 0]
  expected_w = expected_w * MASK
  np.testing.assert_allclose(weights, expected_w, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(interest, jnp.einsum("bl,ble->be", expected_w, keys),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(weights).sum(-1)[:3], 1.0)     # not normalised
  np.testing.assert_array_equal(interest[3], 0.0)                  # no history, no interest


def test_transformer_layer_ignores_padding_keys_and_is_permutation_equivariant():
  x = _normal(4, B, L, 6)
  layer = sequence_layers.TransformerLayer(num_heads=2, head_dim=3, ffn_dim=8)
  params = layer.init(jax.random.key(0), x, jnp.asarray(MASK))
  out = layer.apply(params, x, jnp.asarray(MASK))
  changed = layer.apply(params, x + _normal(5, B, L, 6) * (1 - MASK)[..., None],
                        jnp.asarray(MASK))
  real = MASK[:3] > 0
  np.testing.assert_allclose(np.asarray(changed)[:3][real], np.asarray(out)[:3][real],
                             rtol=1e-5, atol=1e-6)
  full = jnp.ones((B, L))
  order = np.array([3, 0, 4, 1, 2])
  np.testing.assert_allclose(layer.apply(params, x[:, order], full),
                             layer.apply(params, x, full)[:, order], rtol=1e-5, atol=1e-5)


def test_target_and_history_must_embed_to_one_width():
  embedded, _ = _sequence_inputs(0)
  with pytest.raises(ValueError, match=r"target group 'profile' \(2 features x dim 3\) and the "
                                       r"history group 'history' \(1 features x dim 3\)"):
    sequence_layers.candidate_and_history({**embedded, "history": embedded["history"][:, :1]},
                                          "profile", "history")
  with pytest.raises(ValueError, match="'target' must be a sequence group"):
    sequence_layers.candidate_and_history(embedded, "profile", "target")


# ---- models on random inputs ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["din", "bst"])
def test_padding_of_the_history_does_not_change_the_score(name):
  model = TINY[name](other_groups=("profile",))
  embedded, dense = _sequence_inputs(6)
  params = model.init(jax.random.key(0), embedded, dense)
  out = model.apply(params, embedded, dense)["label"]
  assert out.shape == (B,) and bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_allclose(model.apply(params, _garbage_at_padding(embedded, 7), dense)["label"],
                             out, rtol=1e-5, atol=1e-6)


def test_din_ignores_the_order_of_the_history_and_bst_reads_it():
  embedded, dense = _sequence_inputs(8)
  order = np.array([2, 0, 1, 3, 4])                  # row 0's 3 real items, in another order
  shuffled = {**embedded, "history": embedded["history"].at[0].set(embedded["history"][0][:, order])}
  din, bst = TINY["din"](), TINY["bst"]()
  din_params = din.init(jax.random.key(0), embedded, dense)
  # the MLP reads [q (2D), interest (2D), dense]
  assert din_params["params"]["dense_arch"]["dense_0"]["kernel"].shape == (4 * D + 2, 16)
  before, after = (din.apply(din_params, e, dense)["label"] for e in (embedded, shuffled))
  np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)
  bst_params = bst.init(jax.random.key(0), embedded, dense)
  assert bst_params["params"]["positions"].shape == (L + 1, 4)      # recency 0 (candidate)..L
  assert bst_params["params"]["dense_arch"]["dense_0"]["kernel"].shape == ((L + 1) * (2 * D + 4)
                                                                            + 2, 8)
  before, after = (bst.apply(bst_params, e, dense)["label"] for e in (embedded, shuffled))
  assert abs(float(after[0] - before[0])) > 1e-6
  np.testing.assert_allclose(after[1:], before[1:], rtol=1e-6)


# ---- from a config: train 3 steps, evaluate, export, serve -----------------------------------

def _tiny_experiment(name):
  config = config_lib.load(f"{CONFIG}:{name},smoke")
  for item in ("train.steps=3", "train.batch_size=64", "train.eval_batch_size=128",
               "data.synthetic.rows=256", "data.synthetic.eval_rows=200",
               "train.progress_bar=False", "train.checkpoint_every=1000"):
    config_lib.override(config, item)
  with config.unlocked():
    config.model = dict(name=name, **TINY[name].keywords, other_groups=("profile",))
  return config_lib.experiment(config)


def _raw_columns(experiment):
  table = synthetic.generate(experiment.data.synthetic, "eval")
  return {c: tf.constant(table[c].to_numpy().astype(np.float32)) if s.dtype == tf.float32
          else tf.constant(table[c].cast(pa.string()).to_pylist(), tf.string)
          for c, s in export.serving_inputs(experiment).items()}


@pytest.mark.parametrize("name", ["din", "bst"])
def test_model_trains_evaluates_and_exports_from_its_tiny_preset(name, tmp_path):
  experiment = _tiny_experiment(name)
  assert isinstance(experiment.model, MODELS[name])
  history = next(g for g in experiment.groups if g.name == "history")
  assert history.tables_from == "target" and history.combiner == "none"
  summary = train.train_and_evaluate(experiment, tmp_path)
  assert summary["steps"] == 3 and summary["eval"]["examples"] == 200
  assert 0.0 <= summary["eval"]["auc"] <= 1.0

  mesh = sharding.make_mesh()
  state = train.restore_state(experiment, tmp_path, mesh)
  assert set(state.tables) == {"target", "profile"}        # history reads the target's tables
  jax_probs = train.predict(experiment, state, input_lib.load_split(experiment, "eval"),
                            mesh)["label"]
  serve = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE]
  tf_probs = serve(**_raw_columns(experiment))[export.OUTPUT].numpy()
  assert tf_probs.shape == jax_probs.shape == (200,)
  assert np.max(np.abs(tf_probs - jax_probs)) <= 1e-5
  assert np.all(np.isfinite(jax_probs)) and jax_probs.std() > 1e-4   # scores depend on the row


AMAZON = amazon.source()


@pytest.mark.skipif(not AMAZON.exists(), reason=f"the Amazon Electronics sample is not at "
                    f"{AMAZON} (the shared data root, $RECJAX_DATA, is not part of the repository)")
def test_din_on_the_amazon_log_sample_trains_and_serves_its_raw_rows(tmp_path, monkeypatch):
  monkeypatch.setenv("RECJAX_PREPARED", str(tmp_path / "prepared"))
  assert amazon.prepare_variant() == amazon.files()           # what `recjax prepare` writes
  experiment = config_lib.experiment(config_lib.load(str(ROOT / "configs" / "amazon_din.py:smoke")))
  assert experiment.data.train == (amazon.files()["train"],)
  workdir = tmp_path / "run"
  summary = train.train_and_evaluate(experiment, workdir)
  assert summary["steps"] == 10 and summary["train_rows"] == 134
  assert summary["eval"]["examples"] == 32 and summary["eval"]["positive_rate"] == 0.5
  state = train.restore_state(experiment, workdir, sharding.make_mesh())
  jax_probs = train.predict(experiment, state, input_lib.load_split(experiment, "eval"),
                            sharding.make_mesh())["label"]
  with open(experiment.data.eval[0], newline="") as f:
    rows = list(csv.DictReader(f))
  feed = {c: tf.constant([r[c] for r in rows]) for c in export.serving_inputs(experiment)}
  serve = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE]
  assert np.max(np.abs(serve(**feed)[export.OUTPUT].numpy() - jax_probs)) <= 1e-5

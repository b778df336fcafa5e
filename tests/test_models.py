"""Tests for recjax.layers and recjax.models: the FM identity against its pairwise definition,
and every registered model's tiny preset on random inputs, with the wide part's additivity."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import layers
from recjax.models import MODELS, TINY

B, F_WIDE, F_DEEP, D, DN = 5, 4, 3, 6, 2


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


def _inputs(seed):
  rng = np.random.default_rng(seed)
  embedded = {"wide": jnp.asarray(rng.normal(size=(B, F_WIDE, 1)), jnp.float32),
              "deep": jnp.asarray(rng.normal(size=(B, F_DEEP, D)), jnp.float32)}
  return embedded, jnp.asarray(rng.normal(size=(B, DN)), jnp.float32)


def test_every_model_has_a_tiny_preset():
  assert set(MODELS) == set(TINY) == {"wide_deep", "deepfm"}
  for name in MODELS:
    assert isinstance(TINY[name](), MODELS[name])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_model_returns_finite_logits(name):
  model = TINY[name]()
  embedded, dense = _inputs(1)
  params = model.init(jax.random.key(0), embedded, dense)
  out = jax.jit(model.apply)(params, embedded, dense)
  assert set(out) == {"label"}
  assert out["label"].shape == (B,) and out["label"].dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out["label"])))
  assert float(jnp.std(out["label"])) > 0            # depends on the input rows
  other_embedded, other_dense = _inputs(2)
  assert not np.allclose(out["label"], model.apply(params, other_embedded, other_dense)["label"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wide_part_is_additive(name):
  # Wide & Deep's wide ids (and DeepFM's first-order ids) enter the logit as a plain sum.
  model = TINY[name]()
  embedded, dense = _inputs(3)
  params = model.init(jax.random.key(0), embedded, dense)
  delta = jnp.asarray(np.random.default_rng(4).normal(size=(B, F_WIDE, 1)), jnp.float32)
  before = model.apply(params, embedded, dense)["label"]
  after = model.apply(params, {**embedded, "wide": embedded["wide"] + delta}, dense)["label"]
  np.testing.assert_allclose(after - before, jnp.sum(delta, (1, 2)), rtol=1e-5, atol=1e-5)


def test_model_fields_route_groups():
  model = MODELS["wide_deep"](hidden=(4,), wide_group="w", deep_group="d", task="click")
  embedded, dense = _inputs(5)
  renamed = {"w": embedded["wide"], "d": embedded["deep"]}
  params = model.init(jax.random.key(0), renamed, dense)
  out = model.apply(params, renamed, dense)
  assert set(out) == {"click"} and out["click"].shape == (B,)
  assert params["params"]["dense_arch"]["dense_0"]["kernel"].shape == (F_DEEP * D + DN, 4)

"""Tests for recjax.tasks.losses: each loss against a slow reference written with Python loops, on
hand-computed tiny cases, with duplicate item ids, masks and log-Q corrections, and with
finite gradients, since every model's training figure rests on these."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.tasks import losses


def _logsumexp(values):
  m = max(values)
  return m + math.log(sum(math.exp(v - m) for v in values))


def _softplus(x):
  return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def test_sigmoid_cross_entropy_matches_definition_and_stays_finite():
  logits = np.array([-3.0, -0.5, 0.0, 0.7, 4.0], np.float32)
  labels = np.array([0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
  out = np.asarray(losses.sigmoid_cross_entropy(logits, labels))
  for z, y, got in zip(logits, labels, out):
    p = 1 / (1 + math.exp(-float(z)))
    assert got == pytest.approx(-(y * math.log(p) + (1 - y) * math.log(1 - p)), rel=1e-6)
  # Extreme logits: the naive formula gives inf or nan; the stable one gives |z| or 0.
  extreme = np.asarray(losses.sigmoid_cross_entropy(np.array([200.0, -200.0, 200.0]),
                                                    np.array([0.0, 1.0, 1.0])))
  np.testing.assert_allclose(extreme, [200.0, 200.0, 0.0], atol=1e-6)
  assert out.dtype == np.float32


def test_squared_error():
  out = losses.squared_error(np.array([1.0, 2.5, -1.0]), np.array([3.0, 2.5, 1.0]))
  np.testing.assert_allclose(np.asarray(out), [4.0, 0.0, 4.0])


def test_softmax_cross_entropy_hand_case():
  scores = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]], np.float32)
  out = np.asarray(losses.softmax_cross_entropy(scores, np.array([1, 0])))
  assert out[0] == pytest.approx(math.log(3), rel=1e-6)
  assert out[1] == pytest.approx(_logsumexp([1, 2, 3]) - 1.0, rel=1e-6)


def test_bpr_hand_case():
  scores = np.array([[2.0, 1.0, 3.0], [0.0, 0.0, -1.0]], np.float32)
  out = np.asarray(losses.bpr(scores))
  assert out[0] == pytest.approx((_softplus(-1.0) + _softplus(1.0)) / 2, rel=1e-6)
  assert out[1] == pytest.approx((math.log(2) + _softplus(-1.0)) / 2, rel=1e-6)


def test_bpr_needs_a_negative():
  with pytest.raises(ValueError, match="C >= 2"):
    losses.bpr(np.zeros((4, 1)))


def _in_batch_reference(query, items, item_ids, log_q, temperature, mask):
  """Each row's candidate list built in Python: its own item, then every other unmasked row's
  item that is not the same item id."""
  batch = len(query)
  out = []
  for i in range(batch):
    if mask is not None and mask[i] == 0:
      out.append(0.0)
      continue

    def logit(j):
      value = float(np.dot(query[i].astype(np.float64), items[j])) / temperature
      return value - (float(log_q[j]) if log_q is not None else 0.0)

    candidates = [logit(i)]
    for j in range(batch):
      if j == i or item_ids[j] == item_ids[i]:
        continue
      if mask is not None and mask[j] == 0:
        continue
      candidates.append(logit(j))
    out.append(_logsumexp(candidates) - logit(i))
  return np.array(out)


@pytest.mark.parametrize("use_log_q", [False, True])
@pytest.mark.parametrize("use_mask", [False, True])
def test_in_batch_softmax_matches_loop_reference(use_log_q, use_mask):
  rng = np.random.default_rng(0)
  batch, dim = 7, 4
  query = rng.normal(size=(batch, dim)).astype(np.float32)
  items = rng.normal(size=(batch, dim)).astype(np.float32)
  item_ids = np.array([5, 3, 5, 9, 3, 5, 1])        # duplicates: 5 three times, 3 twice
  items[2] = items[5] = items[0]                      # the same id has the same embedding
  items[4] = items[1]
  log_q = np.log(rng.uniform(0.01, 0.5, batch)).astype(np.float32) if use_log_q else None
  mask = np.array([1, 1, 0, 1, 1, 1, 0], np.float32) if use_mask else None
  got = np.asarray(losses.in_batch_softmax(query, items, item_ids, log_q=log_q,
                                           temperature=0.5, mask=mask))
  expected = _in_batch_reference(query, items, item_ids, log_q, 0.5, mask)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_in_batch_softmax_all_same_item_costs_nothing():
  query = np.ones((3, 2), np.float32)
  items = np.ones((3, 2), np.float32)
  out = np.asarray(losses.in_batch_softmax(query, items, np.array([4, 4, 4])))
  np.testing.assert_allclose(out, 0.0, atol=1e-7)


def test_in_batch_softmax_gradients_are_finite_with_exclusions():
  rng = np.random.default_rng(1)
  query = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  items = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
  item_ids = jnp.array([1, 1, 2, 2, 2, 3])
  mask = jnp.array([1, 1, 1, 0, 1, 1], jnp.float32)
  log_q = jnp.log(jnp.full((6,), 0.1))

  def loss(q, v):
    per_row = losses.in_batch_softmax(q, v, item_ids, log_q=log_q, temperature=0.1, mask=mask)
    return losses.weighted_mean(per_row, mask)

  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(query, items)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))
  # The masked row's query gets no gradient: it is neither a loss nor a negative.
  np.testing.assert_array_equal(np.asarray(grads[0])[3], 0.0)
  np.testing.assert_array_equal(np.asarray(grads[1])[3], 0.0)


def _sampled_reference(query, positives, negatives, log_q_pos, log_q_neg, temperature,
                       positive_ids, negative_ids):
  out = []
  for i in range(len(query)):
    negs = negatives if negatives.ndim == 2 else negatives[i]
    pos = float(np.dot(query[i].astype(np.float64), positives[i])) / temperature
    if log_q_pos is not None:
      pos -= float(log_q_pos[i])
    candidates = [pos]
    for n in range(len(negs)):
      if negative_ids is not None:
        neg_id = negative_ids[n] if negative_ids.ndim == 1 else negative_ids[i, n]
        if neg_id == positive_ids[i]:
          continue
      value = float(np.dot(query[i].astype(np.float64), negs[n])) / temperature
      if log_q_neg is not None:
        value -= float(log_q_neg[n] if log_q_neg.ndim == 1 else log_q_neg[i, n])
      candidates.append(value)
    out.append(_logsumexp(candidates) - pos)
  return np.array(out)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("use_log_q", [False, True])
@pytest.mark.parametrize("use_ids", [False, True])
def test_sampled_softmax_matches_loop_reference(per_row, use_log_q, use_ids):
  rng = np.random.default_rng(2)
  batch, num, dim = 5, 6, 3
  query = rng.normal(size=(batch, dim)).astype(np.float32)
  positives = rng.normal(size=(batch, dim)).astype(np.float32)
  neg_shape = (batch, num) if per_row else (num,)
  negatives = rng.normal(size=neg_shape + (dim,)).astype(np.float32)
  log_q_pos = np.log(rng.uniform(0.01, 0.5, batch)).astype(np.float32) if use_log_q else None
  log_q_neg = np.log(rng.uniform(0.01, 0.5, neg_shape)).astype(np.float32) if use_log_q else None
  positive_ids = negative_ids = None
  if use_ids:
    positive_ids = np.array([0, 1, 2, 3, 4])
    negative_ids = rng.integers(0, 5, neg_shape)     # several accidental hits
  got = np.asarray(losses.sampled_softmax(
      query, positives, negatives, log_q_pos, log_q_neg, temperature=0.7,
      positive_ids=positive_ids, negative_ids=negative_ids))
  expected = _sampled_reference(query, positives, negatives, log_q_pos, log_q_neg, 0.7,
                                positive_ids, negative_ids)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_sampled_softmax_gradients_finite_when_every_negative_is_a_hit():
  q = jnp.ones((2, 3))
  pos = jnp.ones((2, 3))
  neg = jnp.ones((4, 3))
  ids = jnp.array([7, 7])

  def loss(q):
    return jnp.sum(losses.sampled_softmax(q, pos, neg, positive_ids=ids,
                                          negative_ids=jnp.full((4,), 7)))

  assert float(loss(q)) == pytest.approx(0.0, abs=1e-7)
  assert np.all(np.isfinite(np.asarray(jax.grad(loss)(q))))


def test_losses_give_finite_gradients():
  rng = np.random.default_rng(3)
  scores = jnp.asarray(rng.normal(size=(4, 5)) * 30, jnp.float32)
  target = jnp.array([0, 2, 4, 1])
  labels = jnp.array([0.0, 1.0, 1.0, 0.0])
  for fn in (lambda s: losses.softmax_cross_entropy(s, target),
             losses.bpr,
             lambda s: losses.sigmoid_cross_entropy(s[:, 0] * 10, labels),
             lambda s: losses.squared_error(s[:, 0], labels)):
    grad = jax.grad(lambda s: jnp.sum(fn(s)))(scores)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_weighted_mean():
  assert float(losses.weighted_mean(jnp.array([1.0, 2.0, 6.0]),
                                    jnp.array([1.0, 0.0, 0.5]))) == pytest.approx(4.0 / 1.5)
  # No weight at all: zero, not nan, and a zero gradient.
  assert float(losses.weighted_mean(jnp.array([3.0, 4.0]), jnp.zeros(2))) == 0.0
  grad = jax.grad(lambda l: losses.weighted_mean(l, jnp.zeros(2)))(jnp.array([3.0, 4.0]))
  np.testing.assert_array_equal(np.asarray(grad), 0.0)


def test_binary_cross_entropy_unchanged():
  logits = jnp.array([0.5, -1.0, 2.0])
  labels = jnp.array([1.0, 0.0, 0.0])
  mask = jnp.array([1.0, 1.0, 0.0])
  expected = (_softplus(-0.5) + _softplus(-1.0)) / 2
  assert float(losses.binary_cross_entropy(logits, labels, mask)) == pytest.approx(expected,
                                                                                   rel=1e-6)

"""Tests for recjax.metrics: the rank-based AUC against a brute-force pair count, and the other
metrics against values worked out by hand, since reported figures must be exact."""

import math

import numpy as np
import pytest

from recjax import metrics


def _pairwise_auc(labels, scores):
  """O(n^2) definition: the share of (positive, negative) pairs ranked right, ties worth 1/2."""
  pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
  wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
  return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_pairwise_count_with_many_ties(seed):
  rng = np.random.default_rng(seed)
  n = 300
  labels = (rng.random(n) < 0.3).astype(np.float32)
  # Few distinct scores, so most pairs of examples are tied; rounding to 0.1 keeps ties exact.
  scores = np.round(rng.random(n) * (1 + 2 * seed), 1).astype(np.float32)
  expected = _pairwise_auc(labels, scores.astype(np.float64))
  assert metrics.auc(labels, scores) == pytest.approx(expected, rel=1e-12)


def test_auc_on_continuous_scores_matches_pairwise_count():
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 2, 200)
  scores = rng.normal(size=200) + labels        # informative, so the AUC is well above 1/2
  expected = _pairwise_auc(labels, scores)
  assert expected > 0.7
  assert metrics.auc(labels, scores) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("labels, scores, expected", [
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),                  # perfect
    ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),                  # reversed
    ([0, 1, 0, 1, 1], [0.5] * 5, 0.5),                          # all tied
    ([0, 1], [0.3, 0.3], 0.5),
    ([0, 1, 0, 1], [0.1, 0.3, 0.35, 0.8], 0.75),                # 3 of 4 pairs right
    ([0, 1, 1], [0.2, 0.2, 0.9], 0.75),                         # one tie, one win
    ([0, 0, 1], [0.9, 0.1, 0.5], 0.5),
])
def test_auc_known_values(labels, scores, expected):
  assert metrics.auc(np.array(labels), np.array(scores)) == expected


def test_auc_ignores_input_order():
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 2, 50)
  scores = np.round(rng.random(50), 1)
  perm = rng.permutation(50)
  assert metrics.auc(labels, scores) == pytest.approx(metrics.auc(labels[perm], scores[perm]),
                                                      rel=1e-12)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0, 0], [0.0]])
def test_auc_is_nan_with_one_class(labels):
  assert math.isnan(metrics.auc(np.array(labels), np.linspace(0, 1, len(labels))))


def test_log_loss_hand_values():
  labels = np.array([1, 0, 1, 0])
  probs = np.array([0.8, 0.3, 0.5, 0.1])
  expected = -(math.log(0.8) + math.log(0.7) + math.log(0.5) + math.log(0.9)) / 4
  assert metrics.log_loss(labels, probs) == pytest.approx(expected, rel=1e-12)
  assert metrics.log_loss([1], [1.0]) == pytest.approx(-math.log(1 - 1e-7), rel=1e-9)


def test_log_loss_clips_certain_mistakes():
  # A confident wrong prediction costs -log(eps), not infinity.
  assert metrics.log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7), rel=1e-9)
  assert metrics.log_loss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3), rel=1e-12)


def test_accuracy_hand_values():
  labels = np.array([1, 0, 1, 0, 1])
  probs = np.array([0.9, 0.2, 0.4, 0.7, 0.51])     # right, right, wrong, wrong, right
  assert metrics.accuracy(labels, probs) == pytest.approx(0.6)
  # 0.5 is not above the threshold, so it predicts the negative class.
  assert metrics.accuracy(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5


def test_binary_metrics_gathers_all():
  labels = np.array([0, 0, 1, 1])
  probs = np.array([0.1, 0.6, 0.4, 0.9])
  out = metrics.binary_metrics(labels, probs)
  assert out == {
      "auc": 0.75,
      "log_loss": pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.4)
                                  + math.log(0.9)) / 4, rel=1e-12),
      "accuracy": 0.5,
      "positive_rate": 0.5,
      "mean_prediction": pytest.approx(0.5),
      "examples": 4,
  }

"""Tests for recjax.tasks.metrics: the rank-based AUC and GAUC against brute-force pair counts and
loops over groups, the ranking and retrieval metrics against per-row loops, and the other
metrics against values worked out by hand, since reported figures must be exact."""

import math

import numpy as np
import pytest

from recjax.tasks import metrics


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
      "calibration": pytest.approx(1.0),
      "positive_rate": 0.5,
      "mean_prediction": pytest.approx(0.5),
      "examples": 4,
  }


def test_binary_metrics_with_groups_adds_gauc():
  labels = np.array([0, 1, 0, 1, 1, 1])
  probs = np.array([0.2, 0.6, 0.7, 0.8, 0.3, 0.4])
  groups = np.array(["a", "a", "b", "b", "c", "c"])        # c has positives only
  out = metrics.binary_metrics(labels, probs, groups=groups)
  assert out["gauc"] == pytest.approx(0.5 * 1.0 + 0.5 * 1.0)
  assert out["gauc_groups"] == 2


def _loop_gauc(labels, scores, groups):
  total, weight, counted = 0.0, 0, 0
  for g in sorted(set(groups.tolist())):
    rows = groups == g
    value = metrics.auc(labels[rows], scores[rows])
    if not math.isnan(value):
      total += value * rows.sum()
      weight += rows.sum()
      counted += 1
  return total / weight, counted


@pytest.mark.parametrize("seed", range(3))
def test_gauc_equals_loop_over_groups(seed):
  rng = np.random.default_rng(seed)
  n = 400
  groups = rng.integers(0, 40, n)
  # Group-dependent positive rates, so some groups are one class only and get skipped.
  rate = rng.choice([0.0, 0.3, 0.7, 1.0], 40)[groups]
  labels = (rng.random(n) < rate).astype(np.float32)
  scores = np.round(rng.random(n) + 0.3 * labels, 1)      # many ties, within and across groups
  expected, expected_groups = _loop_gauc(labels, scores, groups)
  value, counted = metrics.gauc(labels, scores, groups)
  assert counted == expected_groups
  assert 0 < counted < 40
  assert value == pytest.approx(expected, rel=1e-12)
  # The same with string group keys in another order of rows.
  perm = rng.permutation(n)
  value2, counted2 = metrics.gauc(labels[perm], scores[perm], np.char.add("u", groups[perm]
                                                                          .astype(str)))
  assert (value2, counted2) == (pytest.approx(expected, rel=1e-12), expected_groups)


def test_gauc_hand_case_and_edges():
  labels = np.array([1, 0, 0, 1, 0, 1, 1])
  scores = np.array([0.9, 0.1, 0.5, 0.5, 0.4, 0.2, 0.3])
  groups = np.array([7, 7, 3, 3, 3, 9, 9])
  # group 7: AUC 1 (2 rows); group 3: pos 0.5 vs negs 0.5 (tie), 0.4 -> 0.75 (3 rows);
  # group 9: positives only, skipped.
  value, counted = metrics.gauc(labels, scores, groups)
  assert counted == 2
  assert value == pytest.approx((2 * 1.0 + 3 * 0.75) / 5)
  assert metrics.gauc([1, 1], [0.2, 0.4], [0, 1])[1] == 0
  assert math.isnan(metrics.gauc([1, 1], [0.2, 0.4], [0, 1])[0])
  with pytest.raises(ValueError, match="one value per row"):
    metrics.gauc(labels, scores, groups[:3])


def test_calibration_rmse_mae_and_regression_metrics():
  assert metrics.calibration([1, 0, 0, 0], [0.5, 0.5, 0.25, 0.25]) == pytest.approx(1.5)
  assert math.isnan(metrics.calibration([0, 0], [0.1, 0.2]))
  labels = np.array([3.0, 4.0, 1.0, 5.0])
  preds = np.array([2.5, 4.0, 2.0, 3.0])
  assert metrics.rmse(labels, preds) == pytest.approx(math.sqrt((0.25 + 0 + 1 + 4) / 4))
  assert metrics.mae(labels, preds) == pytest.approx((0.5 + 0 + 1 + 2) / 4)
  assert metrics.regression_metrics(labels, preds) == {
      "rmse": pytest.approx(math.sqrt(5.25 / 4)),
      "mae": pytest.approx(0.875),
      "mean_prediction": pytest.approx(2.875),
      "examples": 4,
  }
  with pytest.raises(ValueError, match="shapes"):
    metrics.rmse(labels, preds[:3])


def _loop_rank_metrics(scores, k, ties):
  """Per row: count higher and tied candidates one by one, then average HR and NDCG over the
  ranks the tie policy allows."""
  hr, ndcg = [], []
  for row in scores.tolist():
    target, higher, tied = row[0], 0, 0
    for s in row[1:]:
      higher += s > target
      tied += s == target
    ranks = {"average": range(higher, higher + tied + 1), "optimistic": [higher],
             "pessimistic": [higher + tied]}[ties]
    hr.append(sum(r < k for r in ranks) / len(ranks))
    ndcg.append(sum(1 / math.log2(r + 2) for r in ranks if r < k) / len(ranks))
  return np.mean(hr), np.mean(ndcg)


@pytest.mark.parametrize("ties", ["average", "optimistic", "pessimistic"])
@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_ranking_metrics_equal_loop_reference(ties, k):
  rng = np.random.default_rng(k)
  scores = np.round(rng.random((60, 21)), 1)          # ties everywhere; k=50 > C=21
  hr, ndcg = _loop_rank_metrics(scores, k, ties)
  assert metrics.hit_rate_at_k(scores, k, ties) == pytest.approx(hr, rel=1e-12)
  assert metrics.ndcg_at_k(scores, k, ties) == pytest.approx(ndcg, rel=1e-12)
  out = metrics.ranking_metrics(scores, ks=(k,), ties=ties)
  assert out == {f"hr@{k}": pytest.approx(hr, rel=1e-12), f"ndcg@{k}": pytest.approx(ndcg,
                                                                                      rel=1e-12)}


def test_ranking_metrics_hand_cases_and_ties():
  scores = np.array([[0.5, 0.9, 0.1, 0.3],     # rank 1
                     [0.8, 0.1, 0.2, 0.3]])    # rank 0
  assert metrics.hit_rate_at_k(scores, 1) == 0.5
  assert metrics.ranking_metrics(scores, ks=(1, 2)) == {
      "hr@1": 0.5, "ndcg@1": 0.5,
      "hr@2": 1.0, "ndcg@2": pytest.approx((1 / math.log2(3) + 1) / 2)}
  # Constant scores: the target is tied with all 100 candidates; average gives the chance
  # figure 10/101, optimistic would claim a perfect model, pessimistic a useless one.
  flat = np.zeros((5, 101))
  assert metrics.hit_rate_at_k(flat, 10) == pytest.approx(10 / 101)
  assert metrics.hit_rate_at_k(flat, 10, ties="optimistic") == 1.0
  assert metrics.hit_rate_at_k(flat, 10, ties="pessimistic") == 0.0
  expected_ndcg = sum(1 / math.log2(r + 2) for r in range(10)) / 101
  assert metrics.ndcg_at_k(flat, 10) == pytest.approx(expected_ndcg)
  # k beyond the candidates: every target is a hit.
  assert metrics.hit_rate_at_k(scores, 10) == 1.0
  # A NaN score makes the figure NaN rather than a silent rank.
  assert math.isnan(metrics.hit_rate_at_k(np.array([[np.nan, 0.1], [0.3, 0.1]]), 1))
  with pytest.raises(ValueError, match="ties must be one of"):
    metrics.hit_rate_at_k(scores, 1, ties="random")
  with pytest.raises(ValueError, match="target in column 0"):
    metrics.hit_rate_at_k(np.zeros(5), 1)


def test_ranking_sums_merge_across_shards():
  rng = np.random.default_rng(5)
  scores = np.round(rng.random((50, 11)), 1)
  shards = [metrics.ranking_sums(part, ks=(1, 5)) for part in np.array_split(scores, 3)]
  merged = {name: sum(s[name] for s in shards) for name in shards[0]}
  assert merged["rows"] == 50
  whole = metrics.ranking_metrics(scores, ks=(1, 5))
  assert metrics.mean_of_sums(merged) == {n: pytest.approx(v, rel=1e-12)
                                          for n, v in whole.items()}


def _loop_retrieval(top_ids, targets):
  recall, ndcg = [], []
  for row, wanted in zip(top_ids.tolist(), targets):
    wanted = set(wanted)
    found, dcg, seen = 0, 0.0, set()
    for position, item in enumerate(row):
      if item in wanted and item not in seen:
        found += 1
        dcg += 1 / math.log2(position + 2)
        seen.add(item)
    best = min(len(wanted), len(row))
    recall.append(found / best)
    ndcg.append(dcg / sum(1 / math.log2(p + 2) for p in range(best)))
  return np.mean(recall), np.mean(ndcg)


def test_recall_and_ndcg_single_target_equal_loop_and_vectorised_path():
  rng = np.random.default_rng(11)
  top_ids = rng.integers(0, 30, (80, 8))          # duplicates inside rows too
  targets = rng.integers(0, 30, 80)
  recall, ndcg = _loop_retrieval(top_ids, [[t] for t in targets])
  assert 0 < recall < 1
  assert metrics.recall_at_k(top_ids, targets) == pytest.approx(recall, rel=1e-12)
  assert metrics.retrieval_ndcg(top_ids, targets) == pytest.approx(ndcg, rel=1e-12)
  # The list-of-sets path gives the same on one target per row.
  assert metrics.recall_at_k(top_ids, [{t} for t in targets]) == pytest.approx(recall)


def test_recall_with_several_targets_per_row():
  top_ids = np.array([[1, 2, 3], [4, 5, 6], [7, 7, 8]])
  targets = [{1, 3, 9}, {5, 10, 11, 12, 13}, {7}]
  # Row 0: 2 of 3 found; row 1: 1 found of min(5, 3) = 3; row 2: 7 found once of 1.
  assert metrics.recall_at_k(top_ids, targets) == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
  recall, ndcg = _loop_retrieval(top_ids, targets)
  assert metrics.retrieval_ndcg(top_ids, targets) == pytest.approx(ndcg, rel=1e-12)
  out = metrics.retrieval_metrics(top_ids, targets, ks=(1, 3))
  assert out["recall@1"] == pytest.approx((1 + 0 + 1) / 3)
  assert out["recall@3"] == pytest.approx(recall)
  rng = np.random.default_rng(12)
  top_ids = rng.integers(0, 20, (40, 6))
  targets = [set(rng.integers(0, 20, rng.integers(1, 9)).tolist()) for _ in range(40)]
  for k in (2, 6):
    recall, ndcg = _loop_retrieval(top_ids[:, :k], targets)
    out = metrics.retrieval_metrics(top_ids, targets, ks=(k,))
    assert out == {f"recall@{k}": pytest.approx(recall, rel=1e-12),
                   f"ndcg@{k}": pytest.approx(ndcg, rel=1e-12)}
  sums = [metrics.retrieval_sums(top_ids[i::2], targets[i::2], ks=(6,)) for i in range(2)]
  merged = {name: sums[0][name] + sums[1][name] for name in sums[0]}
  assert metrics.mean_of_sums(merged)["recall@6"] == pytest.approx(
      metrics.retrieval_metrics(top_ids, targets, ks=(6,))["recall@6"], rel=1e-12)


def test_retrieval_errors_name_the_problem():
  with pytest.raises(ValueError, match="row 1 is empty"):
    metrics.recall_at_k(np.array([[1, 2], [3, 4]]), [{1}, set()])
  with pytest.raises(ValueError, match="has 1 rows"):
    metrics.recall_at_k(np.array([[1, 2], [3, 4]]), np.array([1]))
  with pytest.raises(ValueError, match=r"k must be in 1\.\.2"):
    metrics.retrieval_metrics(np.array([[1, 2]]), np.array([1]), ks=(3,))
  # String ids are ids, not collections of characters.
  assert metrics.recall_at_k(np.array([["ab", "c"]]), ["ab"]) == 1.0

"""Exact evaluation metrics over a whole split, on host numpy arrays.

The train loop gathers every prediction of a split onto the host (across devices and
processes), so the figures are exact, not streaming approximations. Each metric is mergeable
in a concrete sense: it is a function of per-row or per-group sums, so the rows of several
shards can simply be concatenated (AUC, GAUC) or their sums added:
- AUC is the Mann-Whitney statistic of the concatenated scores; GAUC is
  sum_g(n_g * AUC_g) / sum_g(n_g) over groups with both classes, so shards keyed by group
  merge by adding those two sums;
- log-loss, calibration, RMSE and MAE are sums over rows divided by a count;
- the ranking metrics (HR@k, NDCG@k, recall@k) are means of one value per row:
  `ranking_sums` / `retrieval_sums` return {metric: sum over rows, "rows": count}, to be
  added across shards and divided at the end.

Ties between scores never favour the model: AUC counts a tied pair 1/2, and HR@k / NDCG@k
take the expected value over a random order of the tied candidates, so constant scores give
the chance figure, not a perfect one.
"""

from collections.abc import Iterable, Sequence

import numpy as np


def _pair(labels, scores, what="scores"):
  labels, scores = np.asarray(labels), np.asarray(scores)
  if labels.shape != scores.shape or labels.ndim != 1:
    raise ValueError(f"labels and {what} must be two vectors of one length, got shapes "
                     f"{labels.shape} and {scores.shape}")
  return labels, scores


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve = P(score of a random positive > a random negative), ties = 1/2.

  Computed from average ranks (the Mann-Whitney U statistic) in O(n log n). NaN when a class
  is absent or a score is NaN.
  """
  labels = np.asarray(labels) > 0.5
  scores = np.asarray(scores, np.float64)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0 or np.isnan(scores).any():
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(scores.size, np.float64)
  # Average rank over each run of tied scores.
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
  ends = np.r_[starts[1:], scores.size]
  ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def gauc(labels: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
  """Group AUC: the AUC of each group with both classes, averaged weighted by the group's rows.

  This is the impression-weighted GAUC of DIN (Zhou et al. 2018), grouped by a user field.
  Groups with one class only have no AUC and are left out. Returns (gauc, groups counted);
  gauc is NaN when no group counts or a score is NaN. One lexsort by (group, score) gives
  every group's average ranks at once.
  """
  labels, scores = _pair(labels, scores)
  groups = np.asarray(groups)
  if groups.shape != labels.shape:
    raise ValueError(f"groups must have one value per row: {groups.shape} vs {labels.shape}")
  scores = scores.astype(np.float64)
  if labels.size == 0 or np.isnan(scores).any():
    return float("nan"), 0
  _, group_ids = np.unique(groups, return_inverse=True)
  group_ids = group_ids.reshape(-1)
  order = np.lexsort((scores, group_ids))
  g, s, positive = group_ids[order], scores[order], labels[order] > 0.5
  n = g.size
  new_group = np.r_[True, g[1:] != g[:-1]]
  new_run = new_group | np.r_[True, s[1:] != s[:-1]]
  group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))
  run_starts = np.flatnonzero(new_run)
  run_ends = np.r_[run_starts[1:], n]
  # Rank within the group (1-based), averaged over each run of tied scores.
  average_position = np.repeat((run_starts + run_ends - 1) / 2.0, run_ends - run_starts)
  ranks = average_position - group_start + 1
  num_groups = int(g[-1]) + 1
  rows = np.bincount(g, minlength=num_groups).astype(np.float64)
  n_pos = np.bincount(g, weights=positive, minlength=num_groups)
  rank_sum = np.bincount(g, weights=ranks * positive, minlength=num_groups)
  n_neg = rows - n_pos
  counted = (n_pos > 0) & (n_neg > 0)
  if not counted.any():
    return float("nan"), 0
  n_pos, n_neg, rank_sum, rows = n_pos[counted], n_neg[counted], rank_sum[counted], rows[counted]
  group_auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
  return float(np.sum(group_auc * rows) / np.sum(rows)), int(counted.sum())


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
  p = np.clip(np.asarray(probabilities, np.float64), eps, 1 - eps)
  y = np.asarray(labels, np.float64)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
  return float(np.mean((np.asarray(probabilities) > 0.5) == (np.asarray(labels) > 0.5)))


def calibration(labels: np.ndarray, probabilities: np.ndarray) -> float:
  """Predicted over observed: mean probability / positive rate (1 is calibrated; NaN when
  there is no positive)."""
  labels, probabilities = _pair(labels, probabilities, "probabilities")
  positive_rate = float(np.mean(labels, dtype=np.float64)) if labels.size else 0.0
  if positive_rate == 0.0:
    return float("nan")
  return float(np.mean(probabilities, dtype=np.float64)) / positive_rate


def rmse(labels: np.ndarray, predictions: np.ndarray) -> float:
  labels, predictions = _pair(labels, predictions, "predictions")
  return float(np.sqrt(np.mean(np.square(predictions.astype(np.float64) - labels))))


def mae(labels: np.ndarray, predictions: np.ndarray) -> float:
  labels, predictions = _pair(labels, predictions, "predictions")
  return float(np.mean(np.abs(predictions.astype(np.float64) - labels)))


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray,
                   groups: np.ndarray | None = None) -> dict[str, float]:
  """The binary-task figures; with `groups` (a user field per row) also GAUC and the number
  of groups it counted."""
  out = {
      "auc": auc(labels, probabilities),
      "log_loss": log_loss(labels, probabilities),
      "accuracy": accuracy(labels, probabilities),
      "calibration": calibration(labels, probabilities),
      "positive_rate": float(np.mean(labels)),
      "mean_prediction": float(np.mean(probabilities)),
      "examples": int(len(labels)),
  }
  if groups is not None:
    out["gauc"], out["gauc_groups"] = gauc(labels, probabilities, groups)
  return out


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
  return {
      "rmse": rmse(labels, predictions),
      "mae": mae(labels, predictions),
      "mean_prediction": float(np.mean(predictions, dtype=np.float64)),
      "examples": int(len(labels)),
  }


# Ranking against sampled candidates: column 0 of scores [N, C] is the target.

_TIES = ("average", "optimistic", "pessimistic")


def _higher_and_tied(scores):
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or scores.shape[1] < 1:
    raise ValueError(f"scores must be [rows, candidates] with the target in column 0, got "
                     f"shape {scores.shape}")
  target, others = scores[:, :1], scores[:, 1:]
  higher = np.sum(others > target, axis=1)
  tied = np.sum(others == target, axis=1)
  return higher, tied, np.isnan(scores).any(axis=1)


def _tie_range(scores, ties):
  """The target's possible 0-based ranks as [first, last] (inclusive) under the tie policy."""
  if ties not in _TIES:
    raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
  higher, tied, bad = _higher_and_tied(scores)
  if ties == "optimistic":
    return higher, higher, bad
  if ties == "pessimistic":
    return higher + tied, higher + tied, bad
  return higher, higher + tied, bad


def _discount_prefix(length):
  """prefix[r] = sum_{j < r} 1 / log2(j + 2): the summed NDCG gains of ranks 0..r-1."""
  return np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(length) + 2.0))]


def _rank_values(scores, k, ties):
  """Per row, HR@k and NDCG@k of the target, averaged over its possible ranks."""
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  first, last, bad = _tie_range(scores, ties)
  count = last - first + 1
  # Ranks first..last are equally likely; those below k are hits.
  hits = np.clip(k - first, 0, count)
  prefix = _discount_prefix(int(last.max(initial=0)) + 2)
  upper = np.minimum(last + 1, k)
  lower = np.minimum(first, upper)
  hr = hits / count
  ndcg = (prefix[upper] - prefix[lower]) / count
  hr[bad] = np.nan
  ndcg[bad] = np.nan
  return hr, ndcg


def hit_rate_at_k(scores: np.ndarray, k: int, ties: str = "average") -> float:
  """Share of rows whose target (column 0) ranks in the top k of its row.

  rank = number of candidates scored strictly higher than the target, plus a share of the
  tied ones: "average" (default) takes the expected value over a random order of the ties,
  "optimistic" puts the target before them (rank = strictly higher only, what much research
  code does: constant scores then give HR 1), "pessimistic" after them.
  """
  return float(np.mean(_rank_values(scores, k, ties)[0]))


def ndcg_at_k(scores: np.ndarray, k: int, ties: str = "average") -> float:
  """Mean of 1 / log2(rank + 2) when rank < k, else 0 (one relevant item: IDCG = 1); ties as
  in `hit_rate_at_k`."""
  return float(np.mean(_rank_values(scores, k, ties)[1]))


def ranking_sums(scores: np.ndarray, ks: Sequence[int] = (10,),
                 ties: str = "average") -> dict[str, float]:
  """{"hr@k": sum over rows, "ndcg@k": sum, "rows": N}: add these across shards."""
  out = {}
  for k in ks:
    hr, ndcg = _rank_values(scores, k, ties)
    out[f"hr@{k}"], out[f"ndcg@{k}"] = float(hr.sum()), float(ndcg.sum())
  out["rows"] = int(np.shape(scores)[0])
  return out


def mean_of_sums(sums: dict[str, float]) -> dict[str, float]:
  """Divides summed per-row metrics by their row count (what `*_sums` return, merged)."""
  rows = sums["rows"]
  return {name: (value / rows if rows else float("nan"))
          for name, value in sums.items() if name != "rows"}


def ranking_metrics(scores: np.ndarray, ks: Sequence[int] = (10,),
                    ties: str = "average") -> dict[str, float]:
  """{"hr@10": .., "ndcg@10": ..} for sampled-candidate evaluation (the SASRec / NCF protocol:
  the target in column 0, e.g. 100 sampled negatives after it)."""
  return mean_of_sums(ranking_sums(scores, ks, ties))


# Full-corpus retrieval: the model's top K item ids per row against the row's target ids.

def _is_collection(value):
  return isinstance(value, Iterable) and not isinstance(value, (str, bytes))


def _retrieval_hits(top_ids, targets):
  """hits [N, K] (a target's first appearance in the row) and the number of targets per row."""
  top_ids = np.asarray(top_ids)
  if top_ids.ndim != 2:
    raise ValueError(f"top_ids must be [rows, K], got shape {top_ids.shape}")
  rows = top_ids.shape[0]
  if isinstance(targets, np.ndarray) and targets.ndim == 1:
    if targets.shape[0] != rows:
      raise ValueError(f"target_ids has {targets.shape[0]} rows, top_ids {rows}")
    hits = top_ids == targets[:, None]
    hits &= np.cumsum(hits, axis=1) == 1          # a duplicated id in the top K counts once
    return hits, np.ones(rows, np.int64)
  # One id (a number or a string) or a collection of ids per row; tolist() turns numpy
  # scalars into the Python values that top_ids.tolist() holds.
  targets = [set(np.asarray(list(t) if _is_collection(t) else [t]).tolist()) for t in targets]
  if len(targets) != rows:
    raise ValueError(f"target_ids has {len(targets)} rows, top_ids {rows}")
  hits = np.zeros(top_ids.shape, bool)
  for i, (row, wanted) in enumerate(zip(top_ids.tolist(), targets)):
    if not wanted:
      raise ValueError(f"target_ids row {i} is empty: a row needs at least one target")
    seen = set()
    for j, item in enumerate(row):
      if item in wanted and item not in seen:
        hits[i, j] = True
        seen.add(item)
  return hits, np.array([len(t) for t in targets], np.int64)


def retrieval_sums(top_ids: np.ndarray, target_ids, ks: Sequence[int] | None = None
                   ) -> dict[str, float]:
  """{"recall@k": sum over rows, "ndcg@k": sum, "rows": N} for each k (default: K, all of
  top_ids' columns); add these across shards. See `recall_at_k` for the definitions."""
  hits, num_targets = _retrieval_hits(top_ids, target_ids)
  width = hits.shape[1]
  prefix = _discount_prefix(width)
  gains = hits / np.log2(np.arange(width) + 2.0)
  out = {}
  for k in ks or (width,):
    if not 1 <= k <= width:
      raise ValueError(f"k must be in 1..{width} (the columns of top_ids), got {k}")
    relevant = np.minimum(num_targets, k)
    out[f"recall@{k}"] = float(np.sum(hits[:, :k].sum(axis=1) / relevant))
    out[f"ndcg@{k}"] = float(np.sum(gains[:, :k].sum(axis=1) / prefix[relevant]))
  out["rows"] = int(hits.shape[0])
  return out


def recall_at_k(top_ids: np.ndarray, target_ids) -> float:
  """Share of targets found in the top K retrieved ids, for full-corpus retrieval.

  top_ids [N, K]: each row's retrieved ids, best first. target_ids: [N] (one target per row:
  recall@K = the share of rows whose target is retrieved) or a sequence of N collections of
  ids (several targets per row: the mean over rows of |found| / min(|targets|, K), so a row
  with more targets than K can still score 1). An id retrieved twice counts once.
  """
  width = np.shape(top_ids)[1]
  return mean_of_sums(retrieval_sums(top_ids, target_ids))[f"recall@{width}"]


def retrieval_ndcg(top_ids: np.ndarray, target_ids) -> float:
  """NDCG@K with binary relevance: sum over found targets of 1 / log2(position + 2), divided
  by the best possible (min(|targets|, K) targets at the top), averaged over rows."""
  width = np.shape(top_ids)[1]
  return mean_of_sums(retrieval_sums(top_ids, target_ids))[f"ndcg@{width}"]


def retrieval_metrics(top_ids: np.ndarray, target_ids, ks: Sequence[int] = (50,)
                      ) -> dict[str, float]:
  """{"recall@50": .., "ndcg@50": ..}: the first k columns of top_ids for each k."""
  return mean_of_sums(retrieval_sums(top_ids, target_ids, ks))

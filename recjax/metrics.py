"""Exact evaluation metrics over a whole split: AUC (ties counted half), log-loss, accuracy.

They run on host numpy arrays of every prediction of the split, so the figures are exact, not
streaming approximations.
"""

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Area under the ROC curve = P(score of a random positive > a random negative), ties = 1/2.

  Computed from average ranks (the Mann-Whitney U statistic) in O(n log n).
  """
  labels = np.asarray(labels) > 0.5
  scores = np.asarray(scores, np.float64)
  n_pos = int(labels.sum())
  n_neg = labels.size - n_pos
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(scores.size, np.float64)
  # Average rank over each run of tied scores.
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
  ends = np.r_[starts[1:], scores.size]
  ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
  p = np.clip(np.asarray(probabilities, np.float64), eps, 1 - eps)
  y = np.asarray(labels, np.float64)
  return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
  return float(np.mean((np.asarray(probabilities) > 0.5) == (np.asarray(labels) > 0.5)))


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
  return {
      "auc": auc(labels, probabilities),
      "log_loss": log_loss(labels, probabilities),
      "accuracy": accuracy(labels, probabilities),
      "positive_rate": float(np.mean(labels)),
      "mean_prediction": float(np.mean(probabilities)),
      "examples": int(len(labels)),
  }

"""Losses: pure, jittable functions returning one float32 loss per example, unreduced.

Each function returns a loss per row rather than a mean so that the caller decides how rows
count: sample weights, masks for missing labels and per-task weights all meet in one
`weighted_mean`, the only reduction. The ranking and recall losses take scores or embeddings
as they come out of a model; none of them reads a config.

Retrieval losses follow the two papers the recall models cite: in-batch softmax with the
log-Q correction of Yi et al. 2019 ("Sampling-bias-corrected neural modeling for large corpus
item recommendations": subtract log of the item's sampling probability from its logit, so
popular items are not punished for appearing often as negatives), and BPR (Rendle et al. 2009).
"""

import jax
import jax.numpy as jnp
import optax


def binary_cross_entropy(logits, labels, mask):
  """Mean sigmoid cross-entropy over rows where mask is 1."""
  losses = optax.sigmoid_binary_cross_entropy(logits, labels)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def sigmoid_cross_entropy(logits, labels):
  """-y log σ(z) - (1-y) log(1-σ(z)), as max(z,0) - z y + log1p(exp(-|z|)): no overflow."""
  logits, labels = _f32(logits), _f32(labels)
  return jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def squared_error(predictions, labels):
  return jnp.square(_f32(predictions) - _f32(labels))


def softmax_cross_entropy(scores, target):
  """scores [B, C], target [B] class index -> logsumexp(scores) - scores[target]."""
  scores = _f32(scores)
  target = jnp.asarray(target, jnp.int32)
  picked = jnp.take_along_axis(scores, target[:, None], axis=1)[:, 0]
  return jax.nn.logsumexp(scores, axis=1) - picked


def bpr(scores):
  """scores [B, C] with the positive in column 0: mean over the C-1 negatives of
  softplus(s_neg - s_pos) = -log σ(s_pos - s_neg)."""
  scores = _f32(scores)
  if scores.ndim != 2 or scores.shape[1] < 2:
    raise ValueError(f"bpr needs scores [B, C] with C >= 2 (a positive and a negative), "
                     f"got shape {scores.shape}")
  return jnp.mean(jax.nn.softplus(scores[:, 1:] - scores[:, :1]), axis=1)


def in_batch_softmax(query, items, item_ids, log_q=None, temperature=1.0, mask=None):
  """Softmax over the batch's items: row i's positive is items[i], the others are negatives.

  logits[i, j] = q_i·v_j / temperature - log_q[j]. Column j is left out of row i's softmax
  when j != i and item_ids[j] == item_ids[i] (the same item met twice is not a negative of
  itself) or when mask[j] is 0. Rows with mask 0 get loss 0; pass the mask as the weights of
  `weighted_mean` too so that they do not count in the mean.
  """
  query, items = _f32(query), _f32(items)
  batch = query.shape[0]
  logits = query @ items.T / temperature
  if log_q is not None:
    logits = logits - _f32(log_q)[None, :]
  item_ids = jnp.asarray(item_ids)
  diagonal = jnp.eye(batch, dtype=bool)
  valid = (item_ids[:, None] != item_ids[None, :]) | diagonal
  if mask is not None:
    mask = _f32(mask)
    valid = valid & (mask[None, :] > 0)
  # The diagonal always stays valid, so each row has a finite log-sum-exp.
  valid = valid | diagonal
  masked = jnp.where(valid, logits, -jnp.inf)
  losses = jax.nn.logsumexp(masked, axis=1) - jnp.diagonal(logits)
  return losses if mask is None else losses * (mask > 0)


def sampled_softmax(query, positives, negatives, log_q_pos=None, log_q_neg=None,
                    temperature=1.0, positive_ids=None, negative_ids=None):
  """Softmax over each row's positive and sampled negatives, with the log-Q correction.

  query [B, D], positives [B, D]; negatives [N, D] shared by all rows or [B, N, D] per row;
  log_q_pos [B], log_q_neg [N] or [B, N] (log sampling probabilities, None for none). With
  positive_ids [B] and negative_ids [N] or [B, N], a negative that is the row's own positive
  item (an accidental hit) is left out.
  """
  query, positives, negatives = _f32(query), _f32(positives), _f32(negatives)
  pos_logit = jnp.sum(query * positives, axis=1) / temperature
  if negatives.ndim == 2:
    neg_logits = query @ negatives.T / temperature
  else:
    neg_logits = jnp.einsum("bd,bnd->bn", query, negatives) / temperature
  if log_q_pos is not None:
    pos_logit = pos_logit - _f32(log_q_pos)
  if log_q_neg is not None:
    log_q_neg = _f32(log_q_neg)
    neg_logits = neg_logits - (log_q_neg[None, :] if log_q_neg.ndim == 1 else log_q_neg)
  if positive_ids is not None and negative_ids is not None:
    negative_ids = jnp.asarray(negative_ids)
    if negative_ids.ndim == 1:
      negative_ids = negative_ids[None, :]
    hit = jnp.asarray(positive_ids)[:, None] == negative_ids
    neg_logits = jnp.where(hit, -jnp.inf, neg_logits)
  all_logits = jnp.concatenate([pos_logit[:, None], neg_logits], axis=1)
  return jax.nn.logsumexp(all_logits, axis=1) - pos_logit


def weighted_mean(losses, weights):
  """sum(losses * weights) / sum(weights); 0 when every weight is 0."""
  losses, weights = _f32(losses), _f32(weights)
  total = jnp.sum(weights)
  return jnp.sum(losses * weights) / jnp.maximum(total, jnp.finfo(jnp.float32).tiny)

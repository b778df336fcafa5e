"""Layers of the behaviour-sequence models: DIN's activation unit and activations, and BST's
transformer layer over the history plus the candidate item.

Inputs come from `embedding.lookup`: a pooled target group [B, Ft, D], a sequence group
[B, Fh, L, D] with its mask [B, L] (1 on real positions). Every layer is a pure function of
one row, so a score does not depend on the other rows of its batch: what serving computes for
a request is what evaluation computed (export parity relies on it).
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

NEG_INF = -1e9          # attention logit of a padding position


def sequence_keys(history):
  """[B, Fh, L, D] -> [B, L, Fh * D]: per position, its features' embeddings side by side
  (an item and its category, in the group's feature order)."""
  b, f, l, d = history.shape
  return jnp.transpose(history, (0, 2, 1, 3)).reshape(b, l, f * d)


class PReLU(nn.Module):
  """f(s) = s for s > 0, else alpha * s, with a learned alpha per channel (He et al. 2015),
  DIN's baseline activation."""

  @nn.compact
  def __call__(self, s):
    alpha = self.param("alpha", nn.initializers.constant(0.25), (s.shape[-1],))
    return jnp.where(s > 0, s, alpha * s)


class Dice(nn.Module):
  """DIN's data-adaptive activation: f(s) = p(s) s + (1 - p(s)) alpha s, with
  p(s) = sigmoid((s - E[s]) / sqrt(Var[s] + eps)) per channel.

  The paper takes E and Var from the batch in training and from moving averages in serving.
  Here they are trained parameters (the centre, and the scale 1 / sqrt(Var + eps)), which is
  Dice's serving form learned end to end: the score of a row never depends on its batch.
  """

  @nn.compact
  def __call__(self, s):
    channels = (s.shape[-1],)
    alpha = self.param("alpha", nn.initializers.zeros, channels)
    center = self.param("center", nn.initializers.zeros, channels)
    scale = self.param("scale", nn.initializers.ones, channels)
    p = jax.nn.sigmoid((s - center) * scale)
    return p * s + (1 - p) * alpha * s


ACTIVATIONS = ("dice", "prelu", "relu", "leaky_relu")


def activation(name: str, layer_name: str):
  """The activation `name` (one of ACTIVATIONS) as a callable; learned ones as submodules."""
  if name == "dice":
    return Dice(name=layer_name)
  if name == "prelu":
    return PReLU(name=layer_name)
  if name == "relu":
    return nn.relu
  if name == "leaky_relu":
    return nn.leaky_relu
  raise ValueError(f"activation {name!r} is not one of {', '.join(ACTIVATIONS)}")


class ActivationMLP(nn.Module):
  """Dense layers, each followed by `activation` (DIN's MLPs with Dice or PReLU)."""
  features: Sequence[int]
  activation: str = "relu"

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      x = activation(self.activation, f"activation_{i}")(x)
    return x


class TargetAttention(nn.Module):
  """DIN's local activation unit (Zhou et al. 2018, eq. 3): the weight of history item k for
  candidate q is an MLP of [q, k, q - k, q * k]; the user's interest is sum_l w_l k_l over
  real positions. Weights are not softmax-normalised, so the pooled vector keeps the
  intensity of the user's interest (how many relevant items the history holds).

  query [B, E], keys [B, L, E], mask [B, L] -> ([B, E] interest, [B, L] weights).
  """
  hidden: Sequence[int] = (80, 40)
  activation: str = "dice"

  @nn.compact
  def __call__(self, query, keys, mask):
    q = jnp.broadcast_to(query[:, None, :], keys.shape)
    x = jnp.concatenate([q, keys, q - keys, q * keys], -1)                     # [B, L, 4E]
    x = ActivationMLP(self.hidden, self.activation, name="mlp")(x)
    weights = nn.Dense(1, name="weight")(x)[..., 0] * mask                     # [B, L]
    return jnp.einsum("bl,ble->be", weights, keys), weights


class TransformerLayer(nn.Module):
  """BST's transformer block (Chen et al. 2019; post-norm as Vaswani et al.): multi-head
  self-attention over the valid positions, then a position-wise feed-forward layer with
  LeakyReLU, each with a residual connection and layer normalisation. [B, T, E] -> [B, T, E].
  """
  num_heads: int = 2
  head_dim: int = 16
  ffn_dim: int = 64

  @nn.compact
  def __call__(self, x, mask):
    attention_mask = nn.make_attention_mask(jnp.ones_like(mask), mask)      # [B, 1, T, T]
    attended = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.num_heads * self.head_dim,
        out_features=x.shape[-1], deterministic=True, name="attention")(
            x, x, mask=attention_mask)
    h = nn.LayerNorm(name="attention_norm")(x + attended)
    ffn = nn.Dense(x.shape[-1], name="ffn_out")(
        nn.leaky_relu(nn.Dense(self.ffn_dim, name="ffn_in")(h)))
    return nn.LayerNorm(name="ffn_norm")(h + ffn)


def candidate_and_history(embedded, target_group: str, history_group: str):
  """The candidate item's embedding q [B, E] (its pooled group's fields side by side), the
  history's keys [B, L, E] and mask [B, L]. Target and history must list matching features
  (an item and its category in both, in the same order) so that q and k live in one space:
  with `tables_from` they then read the same tables."""
  target, history = embedded[target_group], embedded[history_group]
  if history.ndim != 4:
    raise ValueError(f"group {history_group!r} must be a sequence group (combiner 'none'), "
                     f"got embeddings of shape {history.shape}")
  query = target.reshape(target.shape[0], -1)
  keys = sequence_keys(history)
  if query.shape[-1] != keys.shape[-1]:
    raise ValueError(
        f"the target group {target_group!r} ({target.shape[1]} features x dim "
        f"{target.shape[2]}) and the history group {history_group!r} ({history.shape[1]} "
        f"features x dim {history.shape[3]}) must embed to one width to be compared")
  return query, keys, embedded[history_group + "_mask"]


def flatten_groups(embedded, groups: Sequence[str], batch: int):
  """Other pooled groups (a user profile, context) flattened side by side: [B, N]."""
  return [embedded[g].reshape(batch, -1) for g in groups]

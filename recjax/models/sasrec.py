"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

The user tower reads the behaviour history (a sequence group, combiner "none": [B, F, L, D]
and its mask; the F embeddings of a position, e.g. item and category, are summed), scales it
by sqrt(D), adds positional embeddings and runs causal self-attention blocks; the output at
the last real position is the user vector. The item tower is the item's embedding itself,
read from the table of the history items (both features name one `table`, and the item's
group reads it with `tables_from`), so a next-item score is the dot product of the two, as
in the paper.

Differences from the paper, on purpose: positions count back from the most recent item (the
history is left-aligned with padding after it and its length varies; so the most recent item
always has position 0, the one the user vector is read at), the blocks are pre-LayerNorm
with no dropout, and training is one (history prefix, next item) row per position with an
in-batch softmax and the log-Q correction (task kind `in_batch_softmax`) instead of the
paper's binary cross-entropy against one random negative per position: the softmax over a
batch of a few hundred items is a much stronger signal per step and needs no sampler.
"""

import functools
import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from recjax.embedding import tables as embedding
from recjax.errors import ConfigError
from recjax.models import checks
from recjax.models.dssm import ITEM, USER

_MASKED = -1e9        # finite, so a query with no visible key stays finite (uniform weights)


class CausalBlock(nn.Module):
  """x + attention(LN(x)) over earlier real positions, then x + FFN(LN(x)); padding zeroed."""
  num_heads: int
  ffn_dim: int

  @nn.compact
  def __call__(self, x, mask):
    length, dim = x.shape[1], x.shape[2]
    if dim % self.num_heads:
      raise ValueError(f"embedding dim {dim} does not split into {self.num_heads} heads")
    head = dim // self.num_heads
    h = nn.LayerNorm(name="attention_norm")(x)
    qkv = nn.DenseGeneral((3, self.num_heads, head), name="qkv")(h)         # [B, L, 3, H, K]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    logits = jnp.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(head)
    causal = np.tril(np.ones((length, length), bool))
    visible = causal[None, None] & (mask[:, None, None, :] > 0)
    weights = nn.softmax(jnp.where(visible, logits, _MASKED), -1)
    attended = jnp.einsum("bhqs,bshk->bqhk", weights, v)
    x = x + nn.DenseGeneral(dim, axis=(-2, -1), name="attention_out")(attended)
    h = nn.LayerNorm(name="ffn_norm")(x)
    x = x + nn.Dense(dim, name="ffn_out")(nn.relu(nn.Dense(self.ffn_dim, name="ffn_in")(h)))
    return x * mask[..., None]


class SequenceEncoder(nn.Module):
  """[B, L, D] history and its mask [B, L] -> the output at the last real position [B, D]."""
  num_blocks: int
  num_heads: int
  ffn_dim: int

  @nn.compact
  def __call__(self, x, mask):
    length, dim = x.shape[1], x.shape[2]
    count = jnp.sum(mask, -1).astype(jnp.int32)                                   # [B]
    recency = jnp.clip(count[:, None] - 1 - jnp.arange(length)[None], 0, length - 1)
    positions = self.param("positions", nn.initializers.normal(0.05), (length, dim))
    x = (x * math.sqrt(dim) + jnp.take(positions, recency, axis=0)) * mask[..., None]
    for i in range(self.num_blocks):
      x = CausalBlock(self.num_heads, self.ffn_dim or dim, name=f"block_{i}")(x, mask)
    x = nn.LayerNorm(name="final_norm")(x)
    last = jnp.maximum(count - 1, 0)
    return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]


class SASRec(nn.Module):
  """Outputs `user` (the history's encoding), `item` (the item embedding), both [B, D], and
  `task`: their dot product [B]."""
  history_group: str = "history"
  item_group: str = "item"
  num_blocks: int = 2
  num_heads: int = 1
  ffn_dim: int = 0                  # 0: the embedding dim
  task: str = "next_item"

  @nn.nowrap
  def check(self, groups):
    checks.at_least(self, "num_heads", 1)
    history = checks.group(self, "history_group", groups, sequence=True)
    if history.dim % self.num_heads:
      raise ConfigError(f"model.num_heads: {self.num_heads} heads do not split the "
                        f"{history.dim} dims of group {history.name!r} (groups.{history.name}"
                        ".dim); give a divisor of it")

  def setup(self):
    self.sequence_arch = SequenceEncoder(self.num_blocks, self.num_heads, self.ffn_dim)

  def tower_inputs(self, tower: str) -> tuple[tuple[str, ...], bool]:
    """The groups a tower reads and whether it reads the dense features (for its export)."""
    return ((self.history_group,) if tower == USER else (self.item_group,)), False

  def user(self, embedded, dense):
    history = embedded[self.history_group]
    if history.ndim != 4:
      raise ValueError(f"group {self.history_group!r} must be a sequence group "
                       f"(combiner 'none'), got shape {history.shape}")
    return self.sequence_arch(jnp.sum(history, 1), embedded[self.history_group + embedding.MASK])

  def item(self, embedded, dense):
    return jnp.sum(embedded[self.item_group], 1)

  def __call__(self, embedded, dense):
    u, v = self.user(embedded, dense), self.item(embedded, dense)
    return {USER: u, ITEM: v, self.task: jnp.sum(u * v, -1)}


tiny = functools.partial(SASRec, num_blocks=1, num_heads=1)

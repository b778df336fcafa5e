"""BST, the Behavior Sequence Transformer (Chen et al., Alibaba, DLP-KDD 2019): a transformer
layer over the user's behaviour sequence with the candidate item appended, so that every
history item and the candidate attend to each other, then an MLP."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import sequence as sequence_layers
from recjax.models import checks


class BST(nn.Module):
  """logit = w . MLP([flatten(Transformer([k_1 .. k_L, q] ++ positions)), other groups,
  dense]) + b.

  q: the candidate (`target_group`, pooled); k_l: the history (`history_group`, a sequence
  group matching the target's features, usually with `tables_from` it). The paper embeds the
  time gap to the candidate as each item's position; without timestamps the position is the
  recency rank (1 = the latest real item, 0 = the candidate), learned with `position_dim`
  dims and concatenated to the item's embedding as in the paper. `num_layers` transformer
  layers (`num_heads` x `head_dim`, feed-forward `ffn_dim`); padding positions are masked
  as keys and zeroed in the output. The MLP (`hidden`) uses LeakyReLU as in the paper.
  """
  num_layers: int = 1
  num_heads: int = 2
  head_dim: int = 16
  ffn_dim: int = 64
  position_dim: int = 8
  hidden: tuple[int, ...] = (256, 128)
  target_group: str = "target"
  history_group: str = "history"
  other_groups: tuple[str, ...] = ()
  task: str = "label"

  @nn.nowrap
  def check(self, groups):
    for field in ("num_layers", "num_heads", "head_dim"):
      checks.at_least(self, field, 1)

  @nn.compact
  def __call__(self, embedded, dense):
    query, keys, mask = sequence_layers.candidate_and_history(
        embedded, self.target_group, self.history_group)
    batch, length = mask.shape
    tokens = jnp.concatenate([keys, query[:, None, :]], 1)                     # [B, L+1, E]
    valid = jnp.concatenate([mask, jnp.ones((batch, 1), mask.dtype)], 1)
    # Recency rank: with the latest item last among the real ones (padding after them), item
    # l of a history of n items is n - l steps back; the candidate is step 0.
    n = jnp.sum(mask, -1, keepdims=True).astype(jnp.int32)
    steps = jnp.concatenate([jnp.maximum(n - jnp.arange(length), 0),
                             jnp.zeros((batch, 1), jnp.int32)], 1)
    positions = self.param("positions", nn.initializers.normal(0.05),
                           (length + 1, self.position_dim))
    x = jnp.concatenate([tokens, jnp.take(positions, steps, axis=0)], -1)
    for i in range(self.num_layers):
      x = sequence_layers.TransformerLayer(self.num_heads, self.head_dim, self.ffn_dim,
                                           name=f"interaction_{i}")(x, valid)
    x = (x * valid[..., None]).reshape(batch, -1)
    x = jnp.concatenate(
        [x, *sequence_layers.flatten_groups(embedded, self.other_groups, batch), dense], -1)
    x = sequence_layers.ActivationMLP(self.hidden, "leaky_relu", name="dense_arch")(x)
    return {self.task: nn.Dense(1, name="over_arch")(x)[:, 0]}


tiny = functools.partial(BST, num_heads=2, head_dim=4, ffn_dim=8, position_dim=4, hidden=(8,))

"""AutoInt (Song et al., 2019): stacked multi-head self-attention over feature fields."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class AutoInt(nn.Module):
  """fields = [deep group embeddings, x_m v_m per numeric feature]; `attention_layers`
  interacting layers (`layers.FieldSelfAttention`, residual + ReLU); logit = w . flatten + b.

  As the paper, numeric features become fields by scaling a learned vector. A non-empty
  `hidden` adds the paper's AutoInt+ variant: an MLP over the flat embeddings and numeric
  features whose logit is added.
  """
  attention_layers: int = 3
  num_heads: int = 2
  head_dim: int = 16
  residual: bool = True
  hidden: tuple[int, ...] = ()
  deep_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    ids = embedded[self.deep_group]
    numeric = layers.NumericFields(ids.shape[-1], name="sparse_arch")(dense)
    x = jnp.concatenate([ids, numeric], 1)
    for i in range(self.attention_layers):
      x = layers.FieldSelfAttention(self.num_heads, self.head_dim, self.residual,
                                    name=f"interaction_{i}")(x)
    logit = nn.Dense(1, name="over_arch")(layers.flatten(x))[:, 0]
    if self.hidden:
      deep = layers.MLP(self.hidden, name="dense_arch")(
          jnp.concatenate([layers.flatten(ids), dense], -1))
      logit = logit + nn.Dense(1, name="dense_over_arch")(deep)[:, 0]
    return {self.task: logit}


tiny = functools.partial(AutoInt, attention_layers=2, num_heads=2, head_dim=4)

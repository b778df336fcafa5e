"""Wide & Deep (Cheng et al., 2016): a linear model over sparse ids plus an MLP over embeddings."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class WideDeep(nn.Module):
  """logit = wide (sum of 1-dim id weights + linear on dense) + deep (MLP on embeddings + dense).

  `wide_group` must have dim 1; `deep_group` any dim.
  """
  hidden: tuple[int, ...] = (256, 128, 64)
  wide_group: str = "wide"
  deep_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    wide = embedded[self.wide_group]                                  # [B, F, 1]
    wide_logit = jnp.sum(wide, (1, 2)) + nn.Dense(1, name="wide_dense")(dense)[:, 0]
    deep_in = jnp.concatenate([embedded[self.deep_group].reshape(dense.shape[0], -1), dense], -1)
    deep = layers.MLP(self.hidden, name="dense_arch")(deep_in)
    deep_logit = nn.Dense(1, name="over_arch")(deep)[:, 0]
    return {self.task: wide_logit + deep_logit}


tiny = functools.partial(WideDeep, hidden=(16, 8))

"""DNN: an MLP over the concatenated embeddings and numeric features (the deep-only baseline,
as the deep tower of YouTube's ranking model, Covington et al. 2016)."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class DNN(nn.Module):
  """logit = w . MLP([flatten(deep group), dense]) + b."""
  hidden: tuple[int, ...] = (256, 128, 64)
  deep_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    x = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    x = layers.MLP(self.hidden, name="dense_arch")(x)
    return {self.task: nn.Dense(1, name="over_arch")(x)[:, 0]}


tiny = functools.partial(DNN, hidden=(16, 8))

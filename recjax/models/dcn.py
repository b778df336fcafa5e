"""Deep & Cross Network (Wang et al., 2017): a cross network beside an MLP."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class DCN(nn.Module):
  """x0 = [flatten(deep group), dense]; logit = w . [CrossNet(x0), MLP(x0)] + b.

  The paper's structure: the cross network (`layers.CrossNet`, x_{l+1} = x0 (x_l . w_l) +
  b_l + x_l) and the deep network run in parallel on the same stacked input, and the
  combination layer is one logistic unit over their concatenated outputs.
  """
  cross_layers: int = 3
  hidden: tuple[int, ...] = (256, 128)
  deep_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    x0 = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    cross = layers.CrossNet(self.cross_layers, name="interaction")(x0)
    deep = layers.MLP(self.hidden, name="dense_arch")(x0)
    return {self.task: nn.Dense(1, name="over_arch")(jnp.concatenate([cross, deep], -1))[:, 0]}


tiny = functools.partial(DCN, cross_layers=2, hidden=(16, 8))

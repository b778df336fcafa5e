"""DCN-V2 (Wang et al., 2021): the matrix-weighted cross network, stacked or parallel with an MLP."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.layers import interaction as layers
from recjax.models import checks


class DCNv2(nn.Module):
  """x0 = [flatten(deep group), dense]; cross layers x_{l+1} = x0 * (W_l x_l + b_l) + x_l.

  `structure`: "stacked" (logit = w . MLP(Cross(x0)), the paper's fig. 1b) or "parallel"
  (logit = w . [Cross(x0), MLP(x0)], fig. 1a). `low_rank` r > 0 factors W = U V^T; with
  `num_experts` > 1 as well, the mixture of low-rank experts (DCN-Mix). An empty `hidden`
  with "stacked" is the cross network alone (the paper's "CrossNet" baseline).
  """
  cross_layers: int = 3
  low_rank: int = 0
  num_experts: int = 1
  structure: str = "stacked"
  hidden: tuple[int, ...] = (256, 128)
  deep_group: str = "deep"
  task: str = "label"

  @nn.nowrap
  def check(self, groups):
    checks.one_of(self, "structure", ("stacked", "parallel"))
    if self.num_experts > 1 and not self.low_rank:
      raise ConfigError(f"model.low_rank: {self.low_rank}; num_experts > 1 (DCN-Mix) "
                        "needs low_rank > 0")

  @nn.compact
  def __call__(self, embedded, dense):
    x0 = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    cross = layers.CrossNetV2(self.cross_layers, self.low_rank, self.num_experts,
                              name="interaction")(x0)
    if self.structure == "stacked":
      out = layers.MLP(self.hidden, name="dense_arch")(cross)
    else:
      out = jnp.concatenate([cross, layers.MLP(self.hidden, name="dense_arch")(x0)], -1)
    return {self.task: nn.Dense(1, name="over_arch")(out)[:, 0]}


tiny = functools.partial(DCNv2, cross_layers=2, low_rank=4, hidden=(16, 8))

"""MMoE (Ma et al., KDD 2018): multi-gate mixture of experts, a softmax gate per task over
experts shared by all tasks."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers
from recjax.layers import multitask as multitask_layers
from recjax.models import checks


class MMoE(nn.Module):
  """x = [flatten(deep group), dense]; f_k(x) = sum_e softmax(W_k x)_e expert_e(x) (the
  paper's eq. 5); logit_k = tower_k(f_k(x)) for each task k in `tasks`.

  Reads one group (`deep_group`) and the numeric features. The paper's Census-Income setup
  is 8 experts and towers of 8 units.
  """
  num_experts: int = 8
  expert_hidden: tuple[int, ...] = (16,)
  tower: tuple[int, ...] = (8,)
  deep_group: str = "deep"
  tasks: tuple[str, ...] = ("ctr", "cvr")

  @nn.nowrap
  def check(self, groups):
    checks.distinct(self)
    checks.at_least(self, "num_experts", 1)
    checks.non_empty(self, "expert_hidden")

  @nn.compact
  def __call__(self, embedded, dense):
    x = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    experts = multitask_layers.Experts(self.num_experts, self.expert_hidden, name="experts")(x)
    out = {}
    for t in self.tasks:
      mixed, _ = multitask_layers.Gate(name=f"gate_{t}")(x, experts)
      out[t] = multitask_layers.Tower(self.tower, name=f"tower_{t}")(mixed)
    return out


tiny = functools.partial(MMoE, num_experts=3, expert_hidden=(8,), tower=(4,))

"""PLE (Tang et al., RecSys 2020): progressive layered extraction, stacked CGC levels of
task-specific and shared experts, against the negative transfer and seesaw of MMoE."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers
from recjax.layers import multitask as multitask_layers
from recjax.models import checks


class PLE(nn.Module):
  """x = [flatten(deep group), dense] feeds `levels` CGC levels (the paper's fig. 5):
  at each level task k's gate mixes its `num_specific` experts and the `num_shared` shared
  ones, and (below the top level) a shared gate mixes all experts for the next level's
  shared experts; logit_k = tower_k(top-level output of task k).

  Reads one group (`deep_group`) and the numeric features. `levels=1` is CGC alone.
  """
  levels: int = 2
  num_specific: int = 2
  num_shared: int = 2
  expert_hidden: tuple[int, ...] = (16,)
  tower: tuple[int, ...] = (8,)
  deep_group: str = "deep"
  tasks: tuple[str, ...] = ("ctr", "cvr")

  @nn.nowrap
  def check(self, groups):
    checks.distinct(self)
    checks.at_least(self, "levels", 1)             # levels=1 is CGC alone
    checks.at_least(self, "num_specific", 1)
    checks.at_least(self, "num_shared", 1)
    checks.non_empty(self, "expert_hidden")

  @nn.compact
  def __call__(self, embedded, dense):
    x = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    task_inputs, shared = {t: x for t in self.tasks}, x
    for level in range(self.levels):
      task_inputs, shared = multitask_layers.CGC(
          self.tasks, self.num_specific, self.num_shared, self.expert_hidden,
          shared_out=level < self.levels - 1, name=f"level_{level}")(task_inputs, shared)
    return {t: multitask_layers.Tower(self.tower, name=f"tower_{t}")(task_inputs[t])
            for t in self.tasks}


tiny = functools.partial(PLE, levels=2, num_specific=1, num_shared=1, expert_hidden=(8,),
                         tower=(4,))

"""Shared-bottom multi-task model (Caruana 1997, the baseline of the MMoE and PLE papers):
one MLP shared by all tasks, a tower per task on top."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers
from recjax.layers import multitask as multitask_layers
from recjax.models import checks


class SharedBottom(nn.Module):
  """logit_k = tower_k(MLP([flatten(deep group), dense])) for each task k in `tasks`.

  Reads one group (`deep_group`) and the numeric features. With one task it is a DNN with
  hidden layers bottom + tower.
  """
  bottom: tuple[int, ...] = (128, 64)
  tower: tuple[int, ...] = (32,)
  deep_group: str = "deep"
  tasks: tuple[str, ...] = ("ctr", "cvr")

  @nn.nowrap
  def check(self, groups):
    checks.distinct(self)

  @nn.compact
  def __call__(self, embedded, dense):
    x = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    shared = layers.MLP(self.bottom, name="dense_arch")(x)
    return {t: multitask_layers.Tower(self.tower, name=f"tower_{t}")(shared) for t in self.tasks}


tiny = functools.partial(SharedBottom, bottom=(16,), tower=(8,))

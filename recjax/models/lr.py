"""Logistic regression: the linear baseline every ranking model must beat."""

import functools

import flax.linen as nn

from recjax.layers import interaction as layers


class LR(nn.Module):
  """logit = sum of the 1-dim id weights of `wide_group` + w . dense + b.

  With crossed-id features in the group this is the classic CTR LR (McMahan et al. 2013
  train it with FTRL: set `optimizer.sparse.name = "ftrl"`).
  """
  wide_group: str = "wide"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    return {self.task: layers.FirstOrder(name="over_arch")(embedded[self.wide_group], dense)}


tiny = functools.partial(LR)

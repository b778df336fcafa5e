"""FiBiNET (Huang et al., 2019): SENET field importance and bilinear feature interactions."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers
from recjax.models import checks


class FiBiNET(nn.Module):
  """p = Bilinear(E), q = Bilinear(SENET(E)) over the fields E of `deep_group`;
  logit = linear(first-order ids, dense) + w . MLP([flatten(p), flatten(q), dense]) + b.

  The paper's deep variant (eq. 14), with two bilinear layers of their own weights;
  `field_type` picks one shared W ("all"), one per field ("each") or per pair
  ("interaction"). An empty `hidden` gives the shallow variant (a logistic unit over p, q).
  """
  reduction_ratio: float = 3.0
  field_type: str = "all"
  hidden: tuple[int, ...] = (256, 128)
  first_order_group: str = "wide"
  deep_group: str = "deep"
  task: str = "label"

  @nn.nowrap
  def check(self, groups):
    checks.one_of(self, "field_type", ("all", "each", "interaction"))

  @nn.compact
  def __call__(self, embedded, dense):
    fields = embedded[self.deep_group]
    senet = layers.SENet(self.reduction_ratio, name="sparse_arch")(fields)
    p = layers.Bilinear(self.field_type, name="interaction")(fields)
    q = layers.Bilinear(self.field_type, name="senet_interaction")(senet)
    x = jnp.concatenate([layers.flatten(p), layers.flatten(q), dense], -1)
    deep = layers.MLP(self.hidden, name="dense_arch")(x)
    first = layers.FirstOrder(name="first_order")(embedded[self.first_order_group], dense)
    return {self.task: first + nn.Dense(1, name="over_arch")(deep)[:, 0]}


tiny = functools.partial(FiBiNET, hidden=(16, 8))

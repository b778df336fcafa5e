"""xDeepFM (Lian et al., 2018): linear part + compressed interaction network + DNN."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.layers import interaction as layers


class XDeepFM(nn.Module):
  """logit = linear(first-order ids, dense) + w_cin . CIN(fields) + w_dnn . MLP(fields, dense).

  The paper's eq. 13. The CIN (`layers.CIN`) reads the field embeddings of `cin_group` (all of
  one dim) with explicit vector-wise interactions of bounded degree (one per layer); the MLP
  reads the same embeddings flattened, with the numeric features. `split_half` as the
  authors' code.
  """
  cin_layers: tuple[int, ...] = (128, 128)
  split_half: bool = True
  hidden: tuple[int, ...] = (256, 128)
  first_order_group: str = "wide"
  cin_group: str = "deep"
  task: str = "label"

  @nn.nowrap
  def check(self, groups):
    odd = [size for size in self.cin_layers[:-1] if size % 2]
    if self.split_half and odd:
      raise ConfigError(f"model.cin_layers: {tuple(self.cin_layers)!r}: with split_half every "
                        f"layer but the last must be even, not {odd[0]}")

  @nn.compact
  def __call__(self, embedded, dense):
    fields = embedded[self.cin_group]
    first = layers.FirstOrder(name="first_order")(embedded[self.first_order_group], dense)
    cin = layers.CIN(self.cin_layers, self.split_half, name="interaction")(fields)
    deep = layers.MLP(self.hidden, name="dense_arch")(
        jnp.concatenate([layers.flatten(fields), dense], -1))
    over = nn.Dense(1, name="over_arch")(jnp.concatenate([cin, deep], -1))[:, 0]
    return {self.task: first + over}


tiny = functools.partial(XDeepFM, cin_layers=(4, 4), hidden=(16, 8))

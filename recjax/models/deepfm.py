"""DeepFM (Guo et al., 2017): first-order + factorization machine + MLP over shared embeddings."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class DeepFM(nn.Module):
  """logit = first order (1-dim id weights, linear on dense) + FM(deep group) + MLP.

  `first_order_group` must have dim 1; `fm_group` holds the field embeddings that both the FM
  and the MLP read (the "shared embeddings" of the paper).
  """
  hidden: tuple[int, ...] = (400, 400, 400)
  first_order_group: str = "wide"
  fm_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    first = embedded[self.first_order_group]
    first_logit = jnp.sum(first, (1, 2)) + layers.linear(self, dense, "first_order_dense")
    fields = embedded[self.fm_group]
    fm_logit = layers.FM(name="interaction")(fields)
    deep_in = jnp.concatenate([fields.reshape(dense.shape[0], -1), dense], -1)
    deep = layers.MLP(self.hidden, name="dense_arch")(deep_in)
    deep_logit = nn.Dense(1, name="over_arch")(deep)[:, 0]
    return {self.task: first_logit + fm_logit + deep_logit}


tiny = functools.partial(DeepFM, hidden=(16, 8))

"""A ranking model defined outside recjax, built by a config that names it
`model.name = "tests.external_model:IPNN"` (see test_models.py): the path a user's own
package takes."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class IPNN(nn.Module):
  """Product-based network, inner-product variant (Qu et al., 2016): an MLP over the flat
  field embeddings, their pairwise inner products and the numeric features."""
  hidden: tuple[int, ...] = (64, 32)
  deep_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    fields = embedded[self.deep_group]
    products = layers.DotInteraction(name="interaction")(fields)
    x = jnp.concatenate([layers.flatten(fields), products, dense], -1)
    x = layers.MLP(self.hidden, name="dense_arch")(x)
    return {self.task: nn.Dense(1, name="over_arch")(x)[:, 0]}


tiny = functools.partial(IPNN, hidden=(8,))

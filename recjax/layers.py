"""Building blocks shared by models: MLP and factorization-machine interaction."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense layers with ReLU between them; the last layer is linear when `linear_out`."""
  features: Sequence[int]
  linear_out: bool = False

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      if not (self.linear_out and i == len(self.features) - 1):
        x = nn.relu(x)
    return x


class FM(nn.Module):
  """Second-order factorization machine over field embeddings [B, F, D] -> [B]:
  sum over pairs i < j of <v_i, v_j>, computed as 0.5 * ((sum v)^2 - sum v^2)."""

  @nn.compact
  def __call__(self, embeddings):
    square_of_sum = jnp.square(jnp.sum(embeddings, 1))
    sum_of_square = jnp.sum(jnp.square(embeddings), 1)
    return 0.5 * jnp.sum(square_of_sum - sum_of_square, -1)

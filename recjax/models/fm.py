"""Factorization machine (Rendle, 2010): first order plus all pairwise field interactions."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class FM(nn.Module):
  """logit = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j, the paper's degree-2 FM.

  Ids give the first-order weights (`first_order_group`, dim 1) and the factors
  (`fm_group`, any dim). Numeric features enter both as in the paper: a linear weight, and a
  factor v_m scaled by the value (`layers.NumericFields`) unless `numeric_fields` is False.
  """
  first_order_group: str = "wide"
  fm_group: str = "deep"
  numeric_fields: bool = True
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    fields = embedded[self.fm_group]
    if self.numeric_fields:
      numeric = layers.NumericFields(fields.shape[-1], name="sparse_arch")(dense)
      fields = jnp.concatenate([fields, numeric], 1)
    first = layers.FirstOrder(name="first_order")(embedded[self.first_order_group], dense)
    return {self.task: first + layers.FM(name="interaction")(fields)}


tiny = functools.partial(FM)

"""DLRM (Naumov et al., 2019): a bottom MLP for numeric features, dot interactions with the
embeddings, and a top MLP."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers


class DLRM(nn.Module):
  """z = BottomMLP(dense) (its last width is the embedding dim D, ReLU throughout as the
  reference code); T = [z, e_1, ..., e_F]; logit = TopMLP([z, dot products of pairs of T]).

  The paper's "dot" interaction over the dense bottom output and the embeddings of
  `deep_group` (self-products excluded); the top MLP ends in the logistic unit `over_arch`.
  """
  bottom: tuple[int, ...] = (64,)
  top: tuple[int, ...] = (256, 128)
  deep_group: str = "deep"
  task: str = "label"

  @nn.compact
  def __call__(self, embedded, dense):
    fields = embedded[self.deep_group]
    z = layers.MLP(self.bottom + (fields.shape[-1],), name="dense_arch")(dense)
    pairs = layers.DotInteraction(name="interaction")(jnp.concatenate([z[:, None], fields], 1))
    top = layers.MLP(self.top, name="top_arch")(jnp.concatenate([z, pairs], -1))
    return {self.task: nn.Dense(1, name="over_arch")(top)[:, 0]}


tiny = functools.partial(DLRM, bottom=(8,), top=(16, 8))

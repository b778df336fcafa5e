"""DSSM two-tower recall (Huang et al. 2013; as trained at YouTube by Yi et al. 2019).

A user tower and an item tower, each an MLP over the concatenated embeddings of its groups,
map a user and an item to vectors whose dot product scores the pair. The towers share
nothing, so each can run alone: serving embeds the whole item corpus once with `item` and
each request with `user`, then retrieves by nearest neighbours (`recjax.retrieval`,
`recjax.tower_export`). Training is in-batch softmax with the log-Q correction
(`recjax.losses.in_batch_softmax`), registered as the task kind `in_batch_softmax`.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax import embedding
from recjax import layers

USER, ITEM = "user", "item"      # the output keys of the two towers (recjax.retrieval reads them)


def tower_input(embedded: dict, dense, groups, use_dense: bool):
  """[B, N]: the groups' embeddings flattened, sequence groups ([B, F, L, D] with a mask)
  mean-pooled over their real positions first, then the dense features if asked."""
  parts = []
  for group in groups:
    x = embedded[group]
    mask = embedded.get(group + embedding.MASK)
    if mask is not None:                       # [B, F, L, D]; padding rows are zero already
      x = jnp.sum(x, 2) / jnp.maximum(jnp.sum(mask, -1), 1.0)[:, None, None]
    parts.append(layers.flatten(x))
  if use_dense:
    parts.append(dense)
  return jnp.concatenate(parts, -1)


class DSSM(nn.Module):
  """user = MLP(user groups [+ dense]), item = MLP(item groups [+ dense]), both [B, dim],
  L2-normalised when `normalize` (then the task's `temperature` sets the softmax's
  sharpness: about 0.05 for cosine scores). Outputs `user`, `item` and `task`: the pair's
  score u.v [B], what a ranking-style export serves."""
  user_groups: tuple[str, ...] = ("user",)
  item_groups: tuple[str, ...] = ("item",)
  dense_tower: str = "user"         # which tower reads the dense features: user | item | none
  hidden: tuple[int, ...] = (256, 128)
  dim: int = 64
  normalize: bool = True
  task: str = "match"

  def setup(self):
    if self.dense_tower not in (USER, ITEM, "none"):
      raise ValueError(f"dense_tower {self.dense_tower!r} is not one of user, item, none")
    self.user_arch = layers.MLP(tuple(self.hidden) + (self.dim,), linear_out=True)
    self.item_arch = layers.MLP(tuple(self.hidden) + (self.dim,), linear_out=True)

  def tower_inputs(self, tower: str) -> tuple[tuple[str, ...], bool]:
    """The groups a tower reads and whether it reads the dense features (for its export)."""
    groups = self.user_groups if tower == USER else self.item_groups
    return tuple(groups), self.dense_tower == tower

  def _finish(self, x):
    if not self.normalize:
      return x
    return x * jnp.reciprocal(jnp.sqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-12)))

  def user(self, embedded, dense):
    groups, use_dense = self.tower_inputs(USER)
    return self._finish(self.user_arch(tower_input(embedded, dense, groups, use_dense)))

  def item(self, embedded, dense):
    groups, use_dense = self.tower_inputs(ITEM)
    return self._finish(self.item_arch(tower_input(embedded, dense, groups, use_dense)))

  def __call__(self, embedded, dense):
    u, v = self.user(embedded, dense), self.item(embedded, dense)
    return {USER: u, ITEM: v, self.task: jnp.sum(u * v, -1)}


tiny = functools.partial(DSSM, hidden=(16,), dim=8)

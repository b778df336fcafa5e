"""DSSM two-tower recall (Huang et al. 2013; as trained at YouTube by Yi et al. 2019).

A user tower and an item tower, each an MLP over the concatenated embeddings of its groups,
map a user and an item to vectors whose dot product scores the pair. The towers share
nothing, so each can run alone: serving embeds the whole item corpus once with `item` and
each request with `user`, then retrieves by nearest neighbours (`recjax.tasks.retrieval`,
`recjax.export.towers`). Training is in-batch softmax with the log-Q correction
(`recjax.tasks.losses.in_batch_softmax`), registered as the task kind `in_batch_softmax`, or, with
`num_negatives`, sampled softmax over that many negatives per row (task kind
`sampled_softmax`): a softmax over B x N logits rather than B x B, for large batches.
"""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.embedding import tables as embedding
from recjax.layers import interaction as layers
from recjax.models import checks

USER, ITEM = "user", "item"      # the output keys of the two towers (recjax.tasks.retrieval reads them)
NEGATIVES, NEGATIVE_ROWS = "negatives", "negative_rows"   # what sampled softmax reads


def negative_rows(batch: int, num: int):
  """[B, N] int32: row i's negatives are the items of rows i+1 .. i+N (mod B).

  The training batches are uniform random draws of the training rows (a fresh permutation
  each epoch), so these items are drawn from the rows' item distribution: the sampling
  probability of a negative is its item's frequency, which the task's label column gives as
  log-Q. Fixed shifts need no random key, so the model stays a pure function of its inputs.
  With N >= B the shifts wrap onto rows drawn already, and onto the row itself, whose item
  the loss leaves out as an accidental hit.
  """
  return (jnp.arange(batch)[:, None] + jnp.arange(1, num + 1)[None, :]) % batch


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
  score u.v [B], what a ranking-style export serves; with `num_negatives` N > 0 also
  `negatives` [B, N, dim], the item vectors of N other rows of the batch, and `negative_rows`
  [B, N], which rows they are: what the `sampled_softmax` task kind reads."""
  user_groups: tuple[str, ...] = ("user",)
  item_groups: tuple[str, ...] = ("item",)
  dense_tower: str = "user"         # which tower reads the dense features: user | item | none
  hidden: tuple[int, ...] = (256, 128)
  dim: int = 64
  normalize: bool = True
  task: str = "match"
  num_negatives: int = 0            # sampled softmax: negatives per row (0: none produced)

  @nn.nowrap
  def check(self, groups):
    checks.one_of(self, "dense_tower", (USER, ITEM, "none"))
    checks.at_least(self, "num_negatives", 0)

  def setup(self):
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
    out = {USER: u, ITEM: v, self.task: jnp.sum(u * v, -1)}
    if self.num_negatives:
      rows = negative_rows(v.shape[0], self.num_negatives)
      out |= {NEGATIVES: v[rows], NEGATIVE_ROWS: rows}
    return out


tiny = functools.partial(DSSM, hidden=(16,), dim=8)

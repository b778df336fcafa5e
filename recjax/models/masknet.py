"""MaskNet (Wang et al., 2021): instance-guided masks multiplied into the embeddings and hidden layers."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import interaction as layers
from recjax.models import checks


class MaskNet(nn.Module):
  """v_emb = [flatten(deep group), dense]; MaskBlocks (`layers.MaskBlock`) whose masks read v_emb.

  `structure` "serial" (SerMaskNet): the first block masks LN_EMB(v_emb) (a layer norm per
  field), each next block masks the previous block's output; the logit reads the last
  block. "parallel" (ParaMaskNet): one block per entry of `block_sizes` on LN_EMB(v_emb),
  concatenated, then the MLP `hidden`, then the logit.
  """
  block_sizes: tuple[int, ...] = (64, 64, 64)
  structure: str = "serial"
  aggregation_ratio: float = 2.0
  hidden: tuple[int, ...] = (128,)
  deep_group: str = "deep"
  task: str = "label"

  @nn.nowrap
  def check(self, groups):
    checks.one_of(self, "structure", ("serial", "parallel"))

  @nn.compact
  def __call__(self, embedded, dense):
    fields = embedded[self.deep_group]
    v_emb = jnp.concatenate([layers.flatten(fields), dense], -1)
    normed = jnp.concatenate(
        [layers.flatten(nn.LayerNorm(name="sparse_arch")(fields)), dense], -1)
    if self.structure == "serial":
      x = normed
      for i, size in enumerate(self.block_sizes):
        x = layers.MaskBlock(size, self.aggregation_ratio, name=f"interaction_{i}")(v_emb, x)
    else:
      x = jnp.concatenate([layers.MaskBlock(size, self.aggregation_ratio,
                                            name=f"interaction_{i}")(v_emb, normed)
                           for i, size in enumerate(self.block_sizes)], -1)
      x = layers.MLP(self.hidden, name="dense_arch")(x)
    return {self.task: nn.Dense(1, name="over_arch")(x)[:, 0]}


tiny = functools.partial(MaskNet, block_sizes=(8, 8), hidden=(8,))

"""DIN, the Deep Interest Network (Zhou et al., KDD 2018): the user's interest in a candidate
item is a sum over the behaviour history weighted by an activation unit that compares each
history item with the candidate (target attention), instead of one fixed pooled vector."""

import functools

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers import sequence as sequence_layers
from recjax.models import checks


class DIN(nn.Module):
  """logit = w . MLP([q, sum_l a(q, k_l) k_l, other groups, dense]) + b.

  q: the candidate (`target_group`, pooled: e.g. item id and category); k_l: the history
  (`history_group`, a sequence group with combiner "none" listing the matching features,
  usually with `tables_from` the target group); a: the activation unit over
  [q, k, q - k, q * k] (`attention_hidden`), unnormalised. `other_groups` (pooled, e.g. the
  user profile) and the numeric features join the MLP (`hidden`). `activation` (dice, prelu,
  relu, leaky_relu) is used in both MLPs; the paper's best is Dice.
  """
  attention_hidden: tuple[int, ...] = (80, 40)
  hidden: tuple[int, ...] = (200, 80)
  activation: str = "dice"
  target_group: str = "target"
  history_group: str = "history"
  other_groups: tuple[str, ...] = ()
  task: str = "label"

  @nn.nowrap
  def check(self, groups):
    checks.one_of(self, "activation", sequence_layers.ACTIVATIONS)

  @nn.compact
  def __call__(self, embedded, dense):
    query, keys, mask = sequence_layers.candidate_and_history(
        embedded, self.target_group, self.history_group)
    interest, _ = sequence_layers.TargetAttention(
        self.attention_hidden, self.activation, name="interaction")(query, keys, mask)
    x = jnp.concatenate(
        [query, interest, *sequence_layers.flatten_groups(embedded, self.other_groups,
                                                           dense.shape[0]), dense], -1)
    x = sequence_layers.ActivationMLP(self.hidden, self.activation, name="dense_arch")(x)
    return {self.task: nn.Dense(1, name="over_arch")(x)[:, 0]}


tiny = functools.partial(DIN, attention_hidden=(8,), hidden=(16, 8))

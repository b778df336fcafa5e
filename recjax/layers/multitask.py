"""Building blocks of the multi-task models: expert banks, softmax gates and task towers.

Shared-bottom, MMoE and PLE differ only in how experts, gates and towers are wired, so the
three parts are written once here. An expert bank keeps its E experts' weights stacked
([E, in, out] per layer) and runs them as one einsum: with the 8-16 small experts of the
papers, one batched matmul per layer instead of E tiny ones.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class Experts(nn.Module):
  """E independent MLPs (ReLU after every layer, as the papers' experts) over one input:
  [B, N] -> [B, E, H], H = features[-1]; layer i's weights are `kernel_i` [E, in, out] and
  `bias_i` [E, out]."""
  num_experts: int
  features: Sequence[int]

  @nn.compact
  def __call__(self, x):
    if self.num_experts < 1 or not self.features:
      raise ValueError(f"an expert bank needs num_experts >= 1 and hidden units, got "
                       f"{self.num_experts} experts of {tuple(self.features)}")
    init = nn.initializers.lecun_normal(batch_axis=(0,))
    h = jnp.broadcast_to(x[:, None], (x.shape[0], self.num_experts, x.shape[-1]))
    for i, width in enumerate(self.features):
      kernel = self.param(f"kernel_{i}", init, (self.num_experts, h.shape[-1], width))
      bias = self.param(f"bias_{i}", nn.initializers.zeros, (self.num_experts, width))
      h = nn.relu(jnp.einsum("ben,enh->beh", h, kernel) + bias)
    return h


class Gate(nn.Module):
  """A softmax gate: weights g = softmax(W x) [B, E] over E experts' outputs [B, E, H], and
  their mix sum_e g_e h_e [B, H] (MMoE's eq. 5, PLE's eq. 2-3). Returns (mix, weights)."""

  @nn.compact
  def __call__(self, x, experts):
    weights = jax.nn.softmax(nn.Dense(experts.shape[1], name="dense")(x), -1)
    self.sow("intermediates", "weights", weights)    # read by tests and analyses
    return jnp.einsum("be,beh->bh", weights, experts), weights


class Tower(nn.Module):
  """A task's tower: an MLP with ReLU and a linear unit on top, [B, N] -> logit [B]."""
  features: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.features):
      x = nn.relu(nn.Dense(width, name=f"dense_{i}")(x))
    return nn.Dense(1, name="logit")(x)[:, 0]


class CGC(nn.Module):
  """PLE's customized gate control (Tang et al. 2020, sec. 4.2), one extraction level.

  Each task has `num_specific` experts of its own and all share `num_shared`; task k's gate
  mixes its own and the shared experts. With `shared_out` (every level but the last) a
  shared gate mixes all experts into the input of the next level's shared experts. Inputs:
  {task: [B, N]} and the shared input [B, N] (all equal at the first level); returns
  ({task: [B, H]}, shared [B, H] or None).
  """
  tasks: Sequence[str]
  num_specific: int
  num_shared: int
  features: Sequence[int]
  shared_out: bool

  @nn.compact
  def __call__(self, task_inputs, shared_input):
    shared = Experts(self.num_shared, self.features, name="experts_shared")(shared_input)
    specific = {t: Experts(self.num_specific, self.features, name=f"experts_{t}")(task_inputs[t])
                for t in self.tasks}
    outputs = {t: Gate(name=f"gate_{t}")(task_inputs[t],
                                         jnp.concatenate([specific[t], shared], 1))[0]
               for t in self.tasks}
    if not self.shared_out:
      return outputs, None
    every = jnp.concatenate([specific[t] for t in self.tasks] + [shared], 1)
    return outputs, Gate(name="gate_shared")(shared_input, every)[0]


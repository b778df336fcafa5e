"""ESMM (Ma et al., SIGIR 2018): entire-space multi-task model. CVR is learnt over all
impressions, not only clicks, through pCTCVR = pCTR x pCVR, against sample selection bias."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.errors import ConfigError
from recjax.layers import interaction as layers
from recjax.layers import multitask as multitask_layers
from recjax.models import checks


def ctcvr_logit(ctr_logit, cvr_logit):
  """logit(sigmoid(a) sigmoid(b)) = -log(e^-a + e^-b + e^-(a+b)), exact and finite for any
  finite logits (no log of a difference of probabilities close to 1)."""
  return -jax.nn.logsumexp(jnp.stack([-ctr_logit, -cvr_logit, -(ctr_logit + cvr_logit)]), 0)


class ESMM(nn.Module):
  """Two towers over the same embeddings, x = [flatten(deep group), dense]: CTR logit a
  and CVR logit b. Outputs `tasks` = (ctr, ctcvr) names: a and logit(sigmoid(a)
  sigmoid(b)), the two trained over the entire impression space (click, click & buy), and
  `cvr_output`: b, for serving. The CVR tower has no loss of its own; it learns only
  through CTCVR, and the CTR loss never reaches it.

  Reads one group (`deep_group`; its embeddings are the shared lookup table of the paper)
  and the numeric features.
  """
  hidden: tuple[int, ...] = (256, 128)
  deep_group: str = "deep"
  tasks: tuple[str, ...] = ("ctr", "ctcvr")
  cvr_output: str = "cvr"

  @nn.nowrap
  def check(self, groups):
    if len(self.tasks) != 2:
      raise ConfigError(f"model.tasks: {tuple(self.tasks)!r}: ESMM names two outputs, "
                        "(ctr, ctcvr)")
    checks.distinct(self, extra=(self.cvr_output,))

  @nn.compact
  def __call__(self, embedded, dense):
    x = jnp.concatenate([layers.flatten(embedded[self.deep_group]), dense], -1)
    ctr = multitask_layers.Tower(self.hidden, name="ctr_tower")(x)
    cvr = multitask_layers.Tower(self.hidden, name="cvr_tower")(x)
    ctr_name, ctcvr_name = self.tasks
    return {ctr_name: ctr, ctcvr_name: ctcvr_logit(ctr, cvr), self.cvr_output: cvr}


tiny = functools.partial(ESMM, hidden=(16, 8))

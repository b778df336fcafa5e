"""Early stopping: which evaluation is the best so far, and when to stop waiting for a better.

The tracker is fed every evaluation of a run in order (a resumed run feeds it the ones its
workdir recorded first), so the best step and the count of evaluations without improvement
are the same whether or not the run was interrupted.
"""

import dataclasses

from recjax.tasks import spec as tasks


@dataclasses.dataclass
class Tracker:
  metric: str
  patience: int = 0                 # 0: never stop
  min_delta: float = 0.0
  best_step: int | None = None
  best_value: float | None = None
  since_best: int = 0

  def update(self, step: int, metrics: dict) -> bool:
    """Records one evaluation; True when it is the new best."""
    value = float(metrics[self.metric])
    sign = 1.0 if tasks.larger_is_better(self.metric) else -1.0
    if self.best_value is None or sign * (value - self.best_value) > self.min_delta:
      self.best_step, self.best_value, self.since_best = step, value, 0
      return True
    self.since_best += 1
    return False

  @property
  def stop(self) -> bool:
    return bool(self.patience) and self.since_best >= self.patience

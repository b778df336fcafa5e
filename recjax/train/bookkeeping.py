"""What the loop keeps between steps and between evaluations, so the loop itself does not.

Each step's metrics stay on the device until a log, save or evaluation needs them (fetching
them every step would stall the pipeline); `StepLog` holds them, checks the losses are
finite before any state after them is saved, and reduces them to the logged scalars and the
summary. A new training metric is one entry in `record`, `log` and `summary` here.
`Evaluations` is the same for evaluations: the records (`evaluations.json`), the early-stop
tracker and the best evaluation's saved state.
"""

import json
import logging
import sys
import time

import jax
import numpy as np

from recjax import jsonio
from recjax.errors import RecjaxError
from recjax.train import early_stop


def on_overflow(groups, counts: dict[str, int], step: int) -> None:
  """Capacity overflow took the correct slower path; say so per group, or stop where the
  group's `on_overflow` asks to."""
  for group in groups:
    if not counts.get(group.name):
      continue
    message = (f"group {group.name!r}: {counts[group.name]} embedding ids exceeded the "
               f"all_to_all capacity in the steps up to {step}; raise "
               f"groups.{group.name}.capacity_factor")
    if group.on_overflow == "error":
      raise RecjaxError(message)
    logging.warning("recjax: %s (they took the slower all-gather path)", message)


def check_finite(losses, first_step: int, checkpointer) -> None:
  """Stops the run at the first NaN or infinite loss, before any later state is saved."""
  values = np.asarray(jax.device_get(losses), np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    last_good = checkpointer.latest_step()
    kept = (f"the last good checkpoint is at step {last_good}" if last_good is not None
            else "no checkpoint was written")
    raise RecjaxError(
        f"step {first_step + int(bad[0])}: the training loss is {values[bad[0]]}; the run "
        f"stopped ({kept}). Lower optimizer.dense.learning_rate or "
        f"optimizer.sparse.learning_rate, or check the data")


class StepLog:
  """Per-step losses, task losses and overflow counts since the last log; the losses not yet
  checked to be finite; examples per second timed from the second step (the first compiles)."""

  def __init__(self, experiment, start: int):
    self._groups = experiment.groups
    self._batch_size = experiment.train.batch_size
    self._multitask = len(experiment.tasks) > 1
    self._losses, self._task_losses, self._overflows = [], [], []
    self._unchecked, self._first_unchecked = [], start + 1
    self._timed_steps, self._timer = 0, None
    self.total_overflow = {g.name: 0 for g in experiment.groups}
    self.loss, self.task_loss = None, {}          # as of the last log

  def record(self, state_step, metrics: dict) -> None:
    """One step's metrics (still on the device); `state_step` times the first step's end."""
    self._losses.append(metrics["loss"])
    self._task_losses.append(metrics.get("task_loss", {}))
    self._unchecked.append(metrics["loss"])
    self._overflows.append(metrics["embedding_overflow"])
    if self._timer is None:
      jax.block_until_ready(state_step)
      self._timer = time.perf_counter()
    else:
      self._timed_steps += 1

  def check_finite(self, done: int, checkpointer) -> None:
    """Raises at a NaN or infinite loss among the steps up to `done` not yet checked."""
    check_finite(self._unchecked, self._first_unchecked, checkpointer)
    self._unchecked, self._first_unchecked = [], done + 1

  def log(self, done: int) -> dict[str, float]:
    """Reduces the steps since the last log: the scalars to write at step `done` (the loss,
    each task's loss, examples per second, each group's overflow count)."""
    self.loss = float(np.mean(jax.device_get(self._losses)))
    self.task_loss = {name: float(np.mean(values)) for name, values in jax.tree.map(
        lambda *v: np.asarray(v), *jax.device_get(self._task_losses)).items()}
    overflows = jax.device_get(self._overflows)
    overflow = {g: int(np.sum([o[g] for o in overflows])) for g in self.total_overflow}
    self._losses, self._task_losses, self._overflows = [], [], []
    self.total_overflow = {g: self.total_overflow[g] + overflow[g] for g in self.total_overflow}
    if any(overflow.values()):
      on_overflow(self._groups, overflow, done)
    rate = self._timed_steps * self._batch_size / max(time.perf_counter() - self._timer, 1e-9)
    return {"train/loss": self.loss,
            **{f"train/loss/{name}": value for name, value in self.task_loss.items()},
            "train/examples_per_s": rate,
            **{f"train/embedding_overflow/{g}": count for g, count in overflow.items()}}

  def summary(self) -> dict:
    """The summary's training entries: the last logged loss (and task losses), the examples
    per second over the timed steps."""
    return {"loss": self.loss,
            **({"task_loss": self.task_loss} if self._multitask and self.loss is not None
               else {}),
            "examples_per_s": (
                self._timed_steps * self._batch_size / (time.perf_counter() - self._timer)
                if self._timer and self._timed_steps else None)}

  def overflow_summary(self) -> dict:
    return {"embedding_overflow": sum(self.total_overflow.values()),
            "embedding_overflow_by_group": self.total_overflow}


class Evaluations:
  """A run's evaluations: kept in `evaluations.json` (by the chief), fed to early stopping,
  and the best one's state saved by `best_saver` so it can be exported at the end."""

  def __init__(self, cfg, path, best_saver, chief: bool):
    self.tracker = early_stop.Tracker(cfg.early_stop_metric, cfg.patience, cfg.min_delta)
    self.records = []
    self._path, self._best_saver, self._chief = path, best_saver, chief

  def resume(self, start: int) -> None:
    """Takes back the evaluations up to `start` that a resumed run made before."""
    if self._path.exists():
      try:
        records = json.loads(self._path.read_text())
      except ValueError as e:
        print(f"recjax: warning: {self._path} is unreadable ({e}); the evaluations before "
              f"step {start} are not taken back (early stopping starts afresh)",
              file=sys.stderr, flush=True)
        records = []
      self.records = [e for e in records if e["step"] <= start]
    for record in self.records:
      self.tracker.update(record["step"], record)

  def add(self, step: int, metrics: dict, state) -> None:
    """Records an evaluation; saves `state` where it is the best so far."""
    self.records.append({"step": step, **metrics})
    if self.tracker.update(step, metrics) and step not in self._best_saver.steps():
      self._best_saver.save(step, state)

  def write(self) -> None:
    if self._chief:
      jsonio.write(self._path, self.records)

  def last(self, step: int):
    """The metrics of the evaluation at `step` if it was the last one made, else None."""
    if self.records and self.records[-1]["step"] == step:
      return {k: v for k, v in self.records[-1].items() if k != "step"}
    return None

  def best(self, final: int) -> dict:
    """The best evaluation's {"step", "metric", "value"}; the `final` step if none was."""
    tracked = self.tracker.best_step is not None
    return {"step": self.tracker.best_step if tracked else final,
            "metric": self.tracker.metric if tracked else None,
            "value": self.tracker.best_value}

"""Tasks: what a model is trained to predict, with which loss, and how it is evaluated.

A config names its tasks (`tasks.<name>`: label column, loss kind, weight, missing-label
policy, GAUC grouping, upsampling rule) or, for the common single-task case, gives only
`label` and the model's `task` names the one binary task. Everything that differs between
kinds of task lives in one `Kind` here: the per-example loss, the served prediction and the
metrics; the train loop only sums `weight x weighted mean of the loss` over tasks.

Labels are parsed on the host by `recjax.input.labels`, which reads these specs' fields.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from recjax.tasks import losses
from recjax.tasks import metrics as metrics_lib
from recjax.tasks import retrieval as retrieval_lib
from recjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Kind:
  """One kind of task. `loss(output, labels)` -> per-example losses [B]; `predict(output)` ->
  what serving returns; `metrics(labels, predictions, groups)` -> {name: value} on host
  arrays of a whole split; `binary`: labels must be 0/1."""
  loss: Callable
  predict: Callable
  metrics: Callable
  binary: bool = False
  needs_label: bool = True
  # Retrieval kinds: the loss needs the model's whole outputs and the batch (`batch_loss`),
  # the label column names the positive item (its log-Q is the per-row label) and the
  # evaluation ranks a corpus (`recjax.tasks.retrieval.evaluate_tasks`), not per-row predictions.
  batch_loss: Callable | None = None
  retrieval: bool = False


def _binary_metrics(labels, probabilities, groups=None) -> dict:
  out = metrics_lib.binary_metrics(labels, probabilities)
  if groups is not None:
    out["gauc"], out["gauc_groups"] = metrics_lib.gauc(labels, probabilities, groups)
  return out


def _regression_metrics(labels, predictions, groups=None) -> dict:
  return metrics_lib.regression_metrics(labels, predictions)


def _ranking_metrics(labels, scores, groups=None) -> dict:
  return metrics_lib.ranking_metrics(scores)


def _identity(x):
  return x


def _no_metrics(labels, predictions, groups=None) -> dict:
  return {}


# The model outputs that retrieval kinds read.
USER, ITEM, NEGATIVES, NEGATIVE_ROWS = "user", "item", "negatives", "negative_rows"


def _positive_ids(task, batch):
  return batch["ids"][task.item_feature][:, 0]


def _in_batch_softmax(outputs, task, batch):
  """Each row's item against the other rows' items (log-Q corrected, accidental hits out)."""
  return losses.in_batch_softmax(outputs[USER], outputs[ITEM], _positive_ids(task, batch),
                                 batch["labels"][task.name], task.temperature,
                                 batch["loss_weights"][task.name])


def _sampled_softmax(outputs, task, batch):
  """Each row's item against the model's `negatives` output ([B, N, D] per row or [N, D]
  shared). With `negative_rows` [B, N] the negatives are the items of those rows of the batch
  (DSSM's `num_negatives`), drawn by item frequency: their log-Q and the positive's are the
  rows' labels, a negative holding the row's own item (an accidental hit) or from a row of
  weight 0 is left out. Without it the negatives are taken as uniform over the corpus: the
  log-Q correction is a constant and left out."""
  if NEGATIVES not in outputs:
    raise ConfigError(f"tasks.{task.name}.loss: sampled_softmax reads the model's "
                      f"{NEGATIVES!r} output, which it does not produce (DSSM: set "
                      "model.num_negatives)")
  rows = outputs.get(NEGATIVE_ROWS)
  if rows is None:
    return losses.sampled_softmax(outputs[USER], outputs[ITEM], outputs[NEGATIVES],
                                  temperature=task.temperature)
  if not task.label:
    raise ConfigError(f"tasks.{task.name}.label: negatives drawn from the batch need the "
                      "column naming the positive item (its frequency gives log-Q)")
  log_q, ids = batch["labels"][task.name], _positive_ids(task, batch)
  # a row of weight 0 (padding, sample weight 0) is no negative: +inf log-Q, logit -inf
  log_q_neg = jnp.where(batch["loss_weights"][task.name][rows] > 0, log_q[rows], jnp.inf)
  return losses.sampled_softmax(outputs[USER], outputs[ITEM], outputs[NEGATIVES], log_q,
                                log_q_neg, task.temperature, ids, ids[rows])


KINDS: dict[str, Kind] = {
    # a [B] logit against a 0/1 label
    "binary": Kind(losses.sigmoid_cross_entropy, jax.nn.sigmoid, _binary_metrics, binary=True),
    # a [B] prediction against a real label (ratings, watch time)
    "mse": Kind(losses.squared_error, _identity, _regression_metrics),
    # [B, C] scores of candidates whose column 0 is the positive: listwise and pairwise
    "softmax": Kind(lambda scores, _: losses.softmax_cross_entropy(
        scores, jnp.zeros(scores.shape[:1], jnp.int32)), _identity, _ranking_metrics,
        needs_label=False),
    "bpr": Kind(lambda scores, _: losses.bpr(scores), _identity, _ranking_metrics,
                needs_label=False),
    # two-tower recall: `user` and `item` outputs [B, D]; the task's output is their score
    "in_batch_softmax": Kind(None, _identity, _no_metrics, batch_loss=_in_batch_softmax,
                             retrieval=True),
    "sampled_softmax": Kind(None, _identity, _no_metrics, batch_loss=_sampled_softmax,
                            needs_label=False, retrieval=True),
}

# Metrics where larger is better; the others (log_loss, rmse, mae) are better smaller.
LARGER_IS_BETTER = ("auc", "gauc", "accuracy", "hr", "ndcg", "recall", "full_ndcg")
SMALLER_IS_BETTER = ("log_loss", "rmse", "mae")


def larger_is_better(metric: str) -> bool:
  """Direction of an evaluation metric, `auc` or `<task>/ndcg@10`; unknown names raise."""
  base = metric.rsplit("/", 1)[-1].split("@")[0]
  if base in LARGER_IS_BETTER:
    return True
  if base in SMALLER_IS_BETTER:
    return False
  raise ConfigError(f"train.early_stop_metric: {metric!r} is not one of "
                    f"{', '.join(LARGER_IS_BETTER + SMALLER_IS_BETTER)} (or <task>/<metric>)")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task of the `tasks` section (its key is `name`)."""
  name: str
  label: str = ""                   # the label column ("" for kinds that need none)
  positive: tuple[str, ...] = ()    # string labels equal to one of these are 1, others 0
  loss: str = "binary"              # a key of KINDS
  weight: float = 1.0               # this task's share of the total loss
  output: str = ""                  # the model output it reads (default: the task's name)
  missing: str = "error"            # error | mask: an empty label masks this task of the row
  group_by: str = ""                # a column whose values group rows for GAUC
  upsample_column: str = ""         # upsampling rule: positive rows whose column is above
  upsample_above: float = 0.0       #   upsample_above count upsample_factor times
  upsample_factor: float = 1.0
  item_feature: str = ""            # retrieval kinds: the id feature of the positive item
  temperature: float = 1.0          # retrieval kinds: logits are u.v / temperature
  retrieval: Any = None             # retrieval kinds: recjax.tasks.retrieval.RetrievalSpec's keys
  clip_min: float | None = None     # mse: served and evaluated predictions are clipped to
  clip_max: float | None = None     #   [clip_min, clip_max] (ratings); the loss sees them raw

  def __post_init__(self):
    key = f"tasks.{self.name}"
    if self.loss not in KINDS:
      raise ConfigError(f"{key}.loss: {self.loss!r} is not one of {', '.join(KINDS)}")
    if self.missing not in ("error", "mask"):
      raise ConfigError(f"{key}.missing: {self.missing!r} is not one of error, mask")
    if self.weight < 0:
      raise ConfigError(f"{key}.weight: {self.weight} is negative")
    if KINDS[self.loss].needs_label and not self.label:
      raise ConfigError(f"{key}.label: a {self.loss!r} task needs a label column" + (
          " (the column naming the positive item: its frequency gives log-Q)"
          if KINDS[self.loss].retrieval else ""))
    if self.upsample_factor <= 0:
      raise ConfigError(f"{key}.upsample_factor: {self.upsample_factor} is not positive")
    if self.positive and not KINDS[self.loss].binary:
      raise ConfigError(f"{key}.positive: only binary tasks map string labels to 0/1")
    if not self.output:
      object.__setattr__(self, "output", self.name)
    clips = {f"clip_{end}": v for end, v in (("min", self.clip_min), ("max", self.clip_max))
             if v is not None}
    if clips and self.loss != "mse":
      raise ConfigError(f"{key}.{next(iter(clips))}: only mse tasks clip their predictions")
    for field, value in clips.items():
      if not np.isfinite(value):
        raise ConfigError(f"{key}.{field}: {value} is not finite")
    if len(clips) == 2 and not self.clip_min < self.clip_max:
      raise ConfigError(f"{key}.clip_min: {self.clip_min} is not below clip_max {self.clip_max}")
    if KINDS[self.loss].retrieval:
      if not self.item_feature:
        raise ConfigError(f"{key}.item_feature: a {self.loss!r} task needs the id feature of "
                          "the positive item")
      if not self.temperature > 0:
        raise ConfigError(f"{key}.temperature: {self.temperature} is not positive")
      if isinstance(self.retrieval, dict):
        try:
          spec = retrieval_lib.RetrievalSpec(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in self.retrieval.items()})
        except TypeError as e:
          raise ConfigError(f"{key}.retrieval: {e}") from None
        object.__setattr__(self, "retrieval", spec)
    elif self.item_feature or self.retrieval is not None:
      raise ConfigError(f"{key}: item_feature and retrieval are for retrieval kinds "
                        "(in_batch_softmax, sampled_softmax)")

  @property
  def kind(self) -> Kind:
    return KINDS[self.loss]

  def predict(self, output: jax.Array) -> jax.Array:
    """What serving returns and evaluation scores: the kind's prediction, clipped if asked."""
    prediction = self.kind.predict(output)
    if self.clip_min is None and self.clip_max is None:
      return prediction
    return jnp.clip(prediction, self.clip_min, self.clip_max)

  @property
  def columns(self) -> tuple[str, ...]:
    """The raw columns this task reads."""
    return tuple(c for c in (self.label, self.group_by, self.upsample_column) if c)

  @property
  def numeric_label(self) -> bool:
    """Whether the reader parses the label column as a number (missing labels are parsed
    here instead, so that an empty one can mask the task rather than spoil the row)."""
    return (bool(self.label) and not self.positive and self.missing == "error"
            and not self.kind.retrieval)


def check_outputs(tasks, outputs: dict) -> None:
  """Every task reads an output that the model produces."""
  for task in tasks:
    if task.output not in outputs:
      raise ConfigError(f"tasks.{task.name}.output: the model has no output {task.output!r}; "
                        f"it has {', '.join(sorted(outputs))}")


def example_losses(task: TaskSpec, outputs: dict, batch: dict) -> jax.Array:
  if task.kind.batch_loss is not None:
    return task.kind.batch_loss(outputs, task, batch)
  return task.kind.loss(outputs[task.output], batch["labels"].get(task.name))


def total_loss(tasks, outputs: dict, batch: dict) -> tuple[jax.Array, dict]:
  """sum over tasks of weight x (mean per-example loss weighted by the rows' loss weights);
  also the per-task means."""
  per_task = {t.name: losses.weighted_mean(example_losses(t, outputs, batch),
                                           batch["loss_weights"][t.name]) for t in tasks}
  return sum(t.weight * per_task[t.name] for t in tasks), per_task


def predictions(tasks, outputs: dict) -> dict:
  return {t.name: t.predict(outputs[t.output]) for t in tasks}


def evaluate(tasks, labels_: dict, masks: dict, predictions_: dict, groups: dict) -> dict:
  """Metrics of every task over the rows that have its label: flat keys for one task,
  `<task>/<metric>` for several."""
  out = {}
  for task in tasks:
    keep = masks[task.name] > 0
    group = groups.get(task.group_by)
    metrics = task.kind.metrics(labels_[task.name][keep], predictions_[task.name][keep],
                                None if group is None else group[keep])
    prefix = "" if len(tasks) == 1 else f"{task.name}/"
    out |= {f"{prefix}{name}": value for name, value in metrics.items()}
  return out

"""Export to a TF SavedModel that takes raw columns and returns every task's prediction.

The signature has one named input per raw column the features read (float32 for the columns
they read as numbers, strings for the others; any batch size). Inside, the TF
twins of the feature transforms (`features.TfTransform`) compute the very ids and values the
training pipeline computed, tables are TF variables looked up with the same pooling, and the
dense tower is the JAX model converted by jax2tf (StableHLO in one TF op, batch polymorphic).
"""

import pathlib
import shutil
import tempfile

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from recjax.embedding import tables as embedding
from recjax.features import spec as features_lib
from recjax.tasks import spec as tasks

SIGNATURE = "serving_default"
OUTPUT = "probability"      # the output of a single binary task


def output_names(experiment) -> dict[str, str]:
  """Task -> signature output: `probability` (or `prediction` for another kind) for a
  single task, the task's name for several."""
  if len(experiment.tasks) == 1:
    task = experiment.tasks[0]
    return {task.name: OUTPUT if task.kind.binary else "prediction"}
  return {task.name: task.name for task in experiment.tasks}


def serving_inputs(experiment) -> dict[str, tf.TensorSpec]:
  """One [None] TensorSpec per raw column, named after the column: float32 for the columns
  a feature reads as numbers, strings for the others."""
  specs = {}
  for feature in experiment.features:
    for column in feature.columns:
      dtype = tf.float32 if column in feature.numeric_columns else tf.string
      specs[column] = tf.TensorSpec([None], dtype, name=column)
  return specs


def _tf_lookup(tables, plans, ids, weights):
  """TF twin of `embedding.lookup` (same pooling coefficients)."""
  out = {}
  for plan in plans:
    pooled = []
    for j, (feature, table) in enumerate(zip(plan.features, plan.tables)):
      rows = tf.gather(tables[plan.owner(j)][table], ids[feature])            # [B, L, D]
      w = weights[feature]
      if plan.combiner == "mean":
        w = w / tf.maximum(tf.reduce_sum(w, -1, keepdims=True), 1e-12)
      elif plan.combiner == "sqrtn":
        w = w * tf.math.rsqrt(tf.maximum(tf.reduce_sum(w * w, -1, keepdims=True), 1e-24))
      pooled.append(w[..., None] * rows if plan.combiner == "none"
                    else tf.einsum("bl,bld->bd", w, rows))
    out[plan.name] = tf.stack(pooled, 1)
    if plan.combiner == "none":
      out[plan.name + embedding.MASK] = tf.cast(weights[plan.features[0]] != 0, tf.float32)
  return out


def _embedded_keys(plans):
  """The keys of `embedding.lookup`'s output: groups, and sequence groups' masks."""
  for plan in plans:
    yield plan.name
    if plan.combiner == "none":
      yield plan.name + embedding.MASK


class ServingModule(tf.Module):
  """Raw columns -> TF feature transforms -> table lookup -> jax2tf dense tower -> each task's
  prediction (a sigmoid for binary tasks)."""

  def __init__(self, experiment, state):
    super().__init__()
    self.transform = features_lib.TfTransform(experiment.features)
    _, self._plans = embedding.plan(experiment.features, experiment.groups)
    to_variable = lambda x: tf.Variable(np.asarray(x), trainable=False)
    self.tables = jax.tree.map(to_variable, jax.device_get(state.tables))
    self.params = jax.tree.map(to_variable, jax.device_get(state.params))
    model, tasks_ = experiment.model, experiment.tasks
    self._outputs = output_names(experiment)

    def tower(params, embedded, dense):
      return tasks.predictions(tasks_, model.apply({"params": params}, embedded, dense))

    self._tower = jax2tf.convert(
        tower, with_gradient=False,
        polymorphic_shapes=[None, {name: "(b, ...)" for name in _embedded_keys(self._plans)},
                            "(b, ...)"])
    self.serve = tf.function(self._serve, input_signature=[serving_inputs(experiment)],
                             autograph=False)

  def _serve(self, columns):
    batch = self.transform(columns)
    embedded = _tf_lookup(self.tables, self._plans, batch["ids"], batch["weights"])
    predictions = self._tower(self.params, embedded, batch["dense"])
    return {self._outputs[name]: value for name, value in predictions.items()}


def export(experiment, state, directory) -> pathlib.Path:
  """Writes the SavedModel to `directory` atomically (a temporary sibling, then a rename)."""
  directory = pathlib.Path(directory).absolute()
  directory.parent.mkdir(parents=True, exist_ok=True)
  module = ServingModule(experiment, state)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
  try:
    tf.saved_model.save(module, str(tmp),
                        signatures={SIGNATURE: module.serve.get_concrete_function()})
    if directory.exists():
      shutil.rmtree(directory)
    tmp.rename(directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return directory

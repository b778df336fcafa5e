"""Export to a TF SavedModel that takes raw columns and returns every task's prediction.

The signature has one named input per raw column the features read (float32 for the columns
they read as numbers, strings for the others; any batch size). Inside, the TF
twins of the feature transforms (`features.TfTransform`) compute the very ids and values the
training pipeline computed, tables are TF variables looked up with the same pooling, and the
dense tower is the JAX model converted by jax2tf (StableHLO in one TF op, batch polymorphic);
those pieces are `tf_tables`, shared with the towers. With serving entities in the config a
second signature, `rank` (`ranking`), scores N items for one user. `save` writes a module
atomically.
"""

import ctypes
import json
import os
import pathlib
import shutil
import tempfile

import tensorflow as tf

from recjax import fingerprint
from recjax.export import ranking
from recjax.export import tf_tables
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


class ServingModule(tf.Module):
  """Raw columns -> TF feature transforms -> table lookup -> jax2tf dense tower -> each task's
  prediction (a sigmoid for binary tasks)."""

  def __init__(self, experiment, state):
    super().__init__()
    self.transform = features_lib.TfTransform(experiment.features,
                                              experiment.data.strip_whitespace)
    self._plans = experiment.embedding_plan.groups
    self.tables = tf_tables.variables(state.tables)
    self.params = tf_tables.variables(state.params)
    model, tasks_ = experiment.model, experiment.tasks
    self._outputs = output_names(experiment)

    def tower(params, embedded, dense):
      return tasks.predictions(tasks_, model.apply({"params": params}, embedded, dense))

    self.tower = tf_tables.convert(tower, self._plans)
    inputs = serving_inputs(experiment)
    self.serve = tf.function(self._serve, input_signature=[inputs], autograph=False)
    item = experiment.serving.item
    self._ranker = ranking.Ranker(experiment, self, inputs) if item and item.columns else None

  def _serve(self, columns):
    batch = self.transform(columns)
    embedded = tf_tables.lookup(self.tables, self._plans, batch["ids"], batch["weights"])
    return self.outputs(self.tower(self.params, embedded, batch["dense"]))

  def outputs(self, predictions):
    """Each task's prediction under its signature output name."""
    return {self._outputs[name]: value for name, value in predictions.items()}

  def signatures(self) -> dict:
    """The signatures beside `serving_default`: `rank` where the config has a serving item."""
    if self._ranker is None:
      return {}
    return {ranking.SIGNATURE: self._ranker.function.get_concrete_function()}


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
  """Swaps two directories in one step (Linux renameat2 RENAME_EXCHANGE), so a model being
  replaced is never absent, even for an instant; False where the system cannot."""
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    at_cwd, exchange = -100, 2
    return libc.renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0
  except (AttributeError, OSError):
    return False


def readable_by_all(root: pathlib.Path) -> None:
  """Directories 0755 and files 0644 under `root` (mkdtemp makes 0700): a serving process
  running as another user must be able to read the model."""
  root.chmod(0o755)
  for path in root.rglob("*"):
    path.chmod(0o755 if path.is_dir() else 0o644)


def save(module: tf.Module, directory, extra: dict[str, str] | None = None) -> pathlib.Path:
  """Saves `module` to `directory` atomically: its `serve` as the `SIGNATURE` and any other
  `signatures()` it has (the ranking one). Written to a hidden temporary sibling, then
  renamed, so a reader, a TF-Serving watcher or a killed run never sees half a SavedModel;
  a directory already there is swapped with the new one in one step (`_exchange`), then
  removed."""
  directory = pathlib.Path(directory).absolute()
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
  old = tmp.with_name(tmp.name + "-old")
  signatures = {SIGNATURE: module.serve.get_concrete_function()}
  if hasattr(module, "signatures"):
    signatures |= module.signatures()
  try:
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    for name, text in (extra or {}).items():      # assets.extra: files TF-Serving ignores
      (tmp / "assets.extra").mkdir(exist_ok=True)
      (tmp / "assets.extra" / name).write_text(text)
    readable_by_all(tmp)
    if not directory.exists():
      tmp.rename(directory)
    elif not _exchange(tmp, directory):      # (swapped: tmp holds the old model, removed below)
      directory.rename(old)
      tmp.rename(directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
  return directory


FINGERPRINT = "recjax_fingerprint.json"


def export(experiment, state, directory) -> pathlib.Path:
  """Writes the whole model's SavedModel to `directory` atomically (`save`), the config's
  fingerprint (`recjax.fingerprint`) in its assets.extra, so a model is traced to what made
  it."""
  meaning = json.dumps(fingerprint.of(experiment), indent=1, sort_keys=True)
  return save(ServingModule(experiment, state), directory, {FINGERPRINT: meaning})

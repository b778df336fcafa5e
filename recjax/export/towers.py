"""Export the two towers of a retrieval model as two SavedModels: raw columns in, vectors out.

Serving a two-tower model is two jobs at two times: the item tower embeds the whole corpus
offline (into a nearest-neighbour index), the user tower embeds each request online. So each
tower is its own SavedModel (`export/user_tower`, `export/item_tower`) whose signature takes
only the raw columns of the features that tower reads and returns `embedding` [B, D]. They are
built from export.py's pieces: the TF twins of the feature transforms, the TF table lookup
and the model's tower method converted by jax2tf (batch polymorphic, no gradient).
"""

import dataclasses
import pathlib
import shutil
import tempfile

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from recjax.export import saved_model as export
from recjax.features import spec as features_lib
from recjax.tasks import retrieval

OUTPUT = "embedding"
TOWERS = (retrieval.USER, retrieval.ITEM)


class TowerModule(tf.Module):
  """Raw columns of one tower's features -> TF transforms -> table lookup -> jax2tf tower."""

  def __init__(self, experiment, state, tower: str):
    super().__init__()
    features, self._plans, _ = retrieval.tower_parts(experiment, tower)
    self.transform = features_lib.TfTransform(features)
    to_variable = lambda x: tf.Variable(np.asarray(x), trainable=False)
    tables = jax.device_get(state.tables)
    # only the tables this tower reads (under their owning groups: `tables_from`)
    owners = {p.owner(j) for p in self._plans for j in range(len(p.features))}
    self.tables = jax.tree.map(to_variable, {g: tables[g] for g in sorted(owners)})
    self.params = jax.tree.map(to_variable, jax.device_get(state.params))
    model, method = experiment.model, getattr(type(experiment.model), tower)

    def tower_fn(params, embedded, dense):
      return model.apply({"params": params}, embedded, dense, method=method)

    self._tower = jax2tf.convert(
        tower_fn, with_gradient=False,
        polymorphic_shapes=[None, {name: "(b, ...)" for name in export._embedded_keys(self._plans)},
                            "(b, ...)"])
    inputs = export.serving_inputs(dataclasses.replace(experiment, features=features))
    self.serve = tf.function(self._serve, input_signature=[inputs], autograph=False)

  def _serve(self, columns):
    batch = self.transform(columns)
    embedded = export._tf_lookup(self.tables, self._plans, batch["ids"], batch["weights"])
    return {OUTPUT: self._tower(self.params, embedded, batch["dense"])}


def export_tower(experiment, state, tower: str, directory) -> pathlib.Path:
  """Writes one tower's SavedModel to `directory` atomically (a temporary sibling, renamed)."""
  directory = pathlib.Path(directory).absolute()
  directory.parent.mkdir(parents=True, exist_ok=True)
  module = TowerModule(experiment, state, tower)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
  try:
    tf.saved_model.save(module, str(tmp),
                        signatures={export.SIGNATURE: module.serve.get_concrete_function()})
    if directory.exists():
      shutil.rmtree(directory)
    tmp.rename(directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return directory


def export_towers(experiment, state, root) -> dict[str, str]:
  """`root/user_tower` and `root/item_tower`; returns {"user_tower": path, ...}."""
  root = pathlib.Path(root)
  return {f"{tower}_tower": str(export_tower(experiment, state, tower, root / f"{tower}_tower"))
          for tower in TOWERS}

"""Export the two towers of a retrieval model as two SavedModels: raw columns in, vectors out.

Serving a two-tower model is two jobs at two times: the item tower embeds the whole corpus
offline (into a nearest-neighbour index), the user tower embeds each request online. So each
tower is its own SavedModel (`export.writes` lays them out) whose signature takes only the
raw columns of the features that tower reads and returns `embedding` [B, D]. They are
built from the whole model's pieces: the TF twins of the feature transforms, `tf_tables`'
lookup and jax2tf conversion of the model's tower method, and `saved_model.save`.
"""

import dataclasses
import pathlib

import jax
import tensorflow as tf

from recjax.export import saved_model
from recjax.export import tf_tables
from recjax.features import spec as features_lib
from recjax.tasks import retrieval

OUTPUT = "embedding"
TOWERS = (retrieval.USER, retrieval.ITEM)


class TowerModule(tf.Module):
  """Raw columns of one tower's features -> TF transforms -> table lookup -> jax2tf tower."""

  def __init__(self, experiment, state, tower: str):
    super().__init__()
    features, self._plans, _ = retrieval.tower_parts(experiment, tower)
    self.transform = features_lib.TfTransform(features, experiment.data.strip_whitespace)
    tables = jax.device_get(state.tables)
    # only the tables this tower reads (under their owning groups: `tables_from`)
    owners = {p.owner(j) for p in self._plans for j in range(len(p.features))}
    self.tables = tf_tables.variables({g: tables[g] for g in sorted(owners)})
    self.params = tf_tables.variables(state.params)
    model, method = experiment.model, getattr(type(experiment.model), tower)

    def tower_fn(params, embedded, dense):
      return model.apply({"params": params}, embedded, dense, method=method)

    self._tower = tf_tables.convert(tower_fn, self._plans)
    inputs = saved_model.serving_inputs(dataclasses.replace(experiment, features=features))
    self.serve = tf.function(self._serve, input_signature=[inputs], autograph=False)

  def _serve(self, columns):
    batch = self.transform(columns)
    embedded = tf_tables.lookup(self.tables, self._plans, batch["ids"], batch["weights"])
    return {OUTPUT: self._tower(self.params, embedded, batch["dense"])}


def export_tower(experiment, state, tower: str, directory) -> pathlib.Path:
  """Writes one tower's SavedModel to `directory` atomically (`saved_model.save`)."""
  return saved_model.save(TowerModule(experiment, state, tower), directory)


"""The ranking signature: one user (and its request context) against N candidate items.

A ranking request scores N items for one user. Run as N full rows, the user's transforms
and table lookups would be repeated N times; here they run once, on one row, and their
pooled embeddings and dense values are broadcast to the N candidates after the lookup (as
EasyRec's processor tiles user features), then the same jax2tf dense tower as
`serving_default` scores the N rows. So the scores equal `serving_default` on the N full
rows by construction, and the tests hold them to that.

Which side a feature is on follows `serving` in the config: a feature reading only the
user's columns and the context (every raw column not of the item) is a one-row feature; a
feature reading any item column (an item id, a user x item cross) is computed per candidate,
with the one-row columns it also reads broadcast to N first. Sequence features aligned with
each other stay on one side.
"""

import tensorflow as tf

from recjax.embedding import tables as embedding
from recjax.export import tf_tables
from recjax.features import spec as features_lib

SIGNATURE = "rank"


def sides(experiment) -> tuple[set[str], set[str]]:
  """(one-row columns, item columns) of the raw columns the features read."""
  item = set(experiment.serving.item.columns)
  read = {c for f in experiment.features for c in f.columns}
  return read - item, read & item


def item_side_features(experiment) -> set[str]:
  """The names of the features computed per candidate (they read an item column)."""
  _, item = sides(experiment)
  names = {f.name for f in experiment.features if set(f.columns) & item}
  for f in experiment.features:            # aligned sequences go together
    partner = getattr(f, "aligned_with", "")
    if partner and (f.name in names or partner in names):
      names |= {f.name, partner}
  return names


def _broadcast(value, n):
  return tf.broadcast_to(value, tf.concat([[n], tf.shape(value)[1:]], 0))


class Ranker:
  """The `rank` function of a `saved_model.ServingModule`: built from its transform, tables,
  params and tower, so it adds no variables of its own."""

  def __init__(self, experiment, module, input_specs: dict[str, tf.TensorSpec]):
    self._module = module
    self._plans = experiment.embedding_plan.groups
    self._features = experiment.features
    one_row, _ = sides(experiment)
    per_item = item_side_features(experiment)
    self._user = tuple(f for f in experiment.features if f.name not in per_item)
    self._item = tuple(f for f in experiment.features if f.name in per_item)
    self._one_row = one_row
    # [None] for all (one-row columns checked to hold one value: a static [1] would let
    # ops shaped on it run on a longer input before the check)
    self.function = tf.function(self._rank, input_signature=[input_specs], autograph=False)

  def _rank(self, columns):
    module = self._module
    item_columns = [c for c in columns if c not in self._one_row]
    n = tf.shape(columns[item_columns[0]])[0]
    user = {c: v for c, v in columns.items() if c in self._one_row}
    checks = [tf.debugging.assert_equal(tf.shape(v)[0], 1, message=(
        f"rank: column {c!r} is of the user or the context and takes one row"))
        for c, v in user.items()]
    with tf.control_dependencies(checks):
      user = {c: tf.identity(v) for c, v in user.items()}
    items = {c: _broadcast(user[c], n) if c in user else v for c, v in columns.items()}
    u = module.transform.by_feature(user, self._user)
    i = module.transform.by_feature(items, self._item)
    embedded = {}
    for plan in self._plans:
      pooled = []
      for j, feature in enumerate(plan.features):
        if feature in u["ids"]:
          pooled.append(_broadcast(
              tf_tables.pool(module.tables, plan, j, u["ids"], u["weights"]), n))
        else:
          pooled.append(tf_tables.pool(module.tables, plan, j, i["ids"], i["weights"]))
      embedded[plan.name] = tf.stack(pooled, 1)
      if plan.combiner == "none":
        first = u if plan.features[0] in u["ids"] else i
        m = tf_tables.mask(plan, first["weights"])
        embedded[plan.name + embedding.MASK] = m if first is i else _broadcast(m, n)
    dense = [_broadcast(u["dense"][f.name], n) if f.name in u["dense"] else i["dense"][f.name]
             for f in features_lib.numeric_features(self._features)]
    dense = tf.concat(dense, 1) if dense else tf.zeros([n, 0], tf.float32)
    return module.outputs(module.tower(module.params, embedded, dense))

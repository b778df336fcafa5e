"""The raw value served where the store or the request has none, per raw column.

A missing entity (an item not loaded yet), a store that is down, or a context value the
caller left out must not fail a request: the model is given a value its transforms accept
and the server counts it. `serving.defaults` names values per column; the rest follow the
feature reading the column. The same values warm up a newly loaded model version.
"""

from recjax.features.kinds import identity
from recjax.features.kinds import numeric


def raw_default(feature, column: str):
  """The raw value served for a column the store or the request lacks, one the feature
  reads without error: 0.0 for a number, "0|0|..." for a vector of `dim` numbers, "0" for
  an integer id, else "" (an empty string: the out-of-vocabulary or empty-list id)."""
  if column in feature.numeric_columns:
    return 0.0
  if isinstance(feature, numeric.NumericFeature):
    return feature.separator.join(["0"] * feature.dim)
  if isinstance(feature, identity.IdentityFeature):
    return "0"
  return ""


def of(experiment) -> dict:
  """{raw column: default}: `serving.defaults`, else `raw_default` of the feature reading it."""
  given = experiment.serving.defaults or {}
  out = {}
  for feature in experiment.features:
    for column in feature.columns:
      out.setdefault(column, given.get(column, raw_default(feature, column)))
  return out

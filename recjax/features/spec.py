"""Feature kinds, declared once, with a numpy transform for training and a TF twin for serving.

The kinds (one file each in `recjax.features.kinds`): id (hash, vocabulary list or file,
bucketised numbers), identity (integer ids with `num_buckets`), numeric (log1p, min-max,
z-score; `dim` numbers per row), tag (weighted multi-value lists), combo (crossed columns),
sequence (behaviour lists with a mask and parallel sub-features) and lookup (a value from a
key->value map column). Each is a frozen dataclass with one protocol:

  columns, numeric_columns   the raw columns it reads, and those read as numbers (float)
                             rather than strings; input and export ask these
  output                     "ids" (embedded by groups; with `length`, `num_ids`, `table`)
                             or "dense" (with `dim` values per row)
  apply(columns, problems)   numpy path over whole columns -> {"ids", "weights"} or {"dense"};
                             bad rows go to `problems` (raised, or collected for "skip")
  tf_table(), tf_apply(...)  the TF twin: its vocabulary table (or None), and the same dict

Both paths call the same TensorFlow string ops (FarmHash `to_hash_bucket_fast`, `strings.split`,
`to_number`) on whole columns, so an id computed in the Grain pipeline is the id the SavedModel
computes online; float arithmetic is float32 written once per path and tested bit for bit.

A transformed batch is `ids` and `weights`, {id feature: [N, L]} (L the feature's length,
padding has weight 0), and `dense` [N, D] holding every dense feature's values in
declaration order.
"""

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from recjax.errors import ConfigError
from recjax.features.kinds.combo import ComboFeature
from recjax.features.kinds.identity import IdentityFeature
from recjax.features.kinds.ids import IdFeature
from recjax.features.kinds.lookup import LookupFeature
from recjax.features.kinds.numeric import NumericFeature
from recjax.features.kinds.problems import Problems
from recjax.features.kinds.sequence import SequenceFeature
from recjax.features.kinds.strings import show, tf_check
from recjax.features.kinds.tags import TagFeature

Feature = (IdFeature | IdentityFeature | NumericFeature | TagFeature | ComboFeature
           | SequenceFeature | LookupFeature)
KINDS = {"id": IdFeature, "identity": IdentityFeature, "numeric": NumericFeature,
         "tag": TagFeature, "combo": ComboFeature, "sequence": SequenceFeature,
         "lookup": LookupFeature}


@dataclasses.dataclass(frozen=True)
class Group:
  """Id features that feed one part of a model, embedded with one dimension."""
  name: str
  features: tuple[str, ...]
  dim: int
  combiner: str = "sum"             # sum | mean | sqrtn (pool multi-ids) | none (sequences)
  init_scale: float = 0.05
  placement: str = "auto"           # auto (sharded from 2^17 rows) | replicated | sharded
  capacity_factor: float = 2.0      # all_to_all capacity: this x the even share of ids
  on_overflow: str = "fallback"     # fallback (correct slower path) | error
  tables_from: str = ""             # a group whose tables this group's features read where
                                    # they name the same table (see `table_owners`)

  def __post_init__(self):
    if self.dim < 1 or not self.features:
      raise ValueError("a group needs features and a positive dim")
    if self.tables_from == self.name:
      raise ValueError("tables_from names the group itself")
    for field, allowed in (("combiner", ("sum", "mean", "sqrtn", "none")),
                           ("placement", ("auto", "replicated", "sharded")),
                           ("on_overflow", ("fallback", "error"))):
      if getattr(self, field) not in allowed:
        raise ValueError(f"{field} {getattr(self, field)!r} is not one of {', '.join(allowed)}")
    if not self.capacity_factor > 0:
      raise ValueError("capacity_factor must be positive")


def build_feature(name: str, spec: dict, key: str, build: Callable) -> Feature:
  kind = spec.pop("kind", None)
  if kind not in KINDS:
    raise ConfigError(f"{key}.kind: {kind!r} is not a feature kind; valid kinds: {', '.join(KINDS)}")
  return build(KINDS[kind], spec, key, name=name)


def _check_columns(features) -> None:
  """A raw column is read as numbers or as strings, not both (input and export give it one
  dtype)."""
  numeric, text = {}, {}
  for f in features:
    for column in f.columns:
      (numeric if column in f.numeric_columns else text).setdefault(column, f.name)
  for column in sorted(set(numeric) & set(text)):
    raise ConfigError(f"features.{text[column]}: reads column {column!r} as strings, but "
                      f"features.{numeric[column]} reads it as numbers; give one of them a "
                      "column of its own")


def _check_aligned(features) -> None:
  by_name = {f.name: f for f in features}
  for f in features:
    if not getattr(f, "aligned_with", ""):
      continue
    other = by_name.get(f.aligned_with)
    if not isinstance(other, SequenceFeature):
      raise ConfigError(f"features.{f.name}.aligned_with: {f.aligned_with!r} is not a "
                        "sequence feature")
    if (other.max_len, other.keep) != (f.max_len, f.keep):
      raise ConfigError(f"features.{f.name}: aligned with {other.name!r}, so max_len and keep "
                        f"must match its ({other.max_len}, {other.keep!r})")


def table_of(feature) -> str:
  """The name of the table a feature's ids index: its `table`, by default its own name."""
  return getattr(feature, "table", "") or feature.name


def table_owners(features, groups) -> dict[tuple[str, str], str]:
  """(group, table name) -> the group whose table it is, for every table a group reads.

  A table belongs to its group: the same feature in two groups (a dim-1 `wide` and a dim-16
  `deep`) has a table in each. A group with `tables_from: other` reads `other`'s table
  wherever its features name a table that `other` also has (followed through `other`'s own
  `tables_from`): e.g. a behaviour sequence (`hist_item`, `table="item_id"`) and the
  candidate item it is compared with (`item_id` in a pooled group) then look up one table.
  Sharing groups must agree on dim and on the table's size, and share at least one table.
  """
  by_name = {f.name: f for f in features}
  by_group = {g.name: g for g in groups}
  tables = {g.name: {table_of(by_name[n]) for n in g.features if n in by_name} for g in groups}
  for group in groups:
    if group.tables_from and group.tables_from not in by_group:
      raise ConfigError(f"groups.{group.name}.tables_from: {group.tables_from!r} is not a "
                        f"group; groups: {', '.join(by_group)}")

  def owner(group, table, path=()):
    if group.name in path:
      raise ConfigError(f"groups.{path[0]}.tables_from: {' -> '.join(path + (group.name,))} "
                        "is a cycle")
    source = by_group.get(group.tables_from)
    if source is None or table not in tables[source.name]:
      return group.name
    return owner(source, table, path + (group.name,))

  owners = {(g.name, t): owner(g, t) for g in groups for t in sorted(tables[g.name])}
  for group in groups:
    if not group.tables_from:
      continue
    shared = sorted(t for t in tables[group.name] if t in tables[group.tables_from])
    if not shared:
      raise ConfigError(
          f"groups.{group.name}.tables_from: group {group.tables_from!r} has none of the tables "
          f"{group.name!r} reads ({', '.join(sorted(tables[group.name]))}); its tables: "
          f"{', '.join(sorted(tables[group.tables_from]))}")
    source = by_group[owners[(group.name, shared[0])]]
    if source.dim != group.dim:
      raise ConfigError(f"groups.{group.name}.dim: {group.dim}, but it reads tables of group "
                        f"{source.name!r} of dim {source.dim}; sharing groups need one dim")
  sizes = {}
  reads = [(owners[(g.name, table_of(by_name[n]))], table_of(by_name[n]), g.name, n)
           for g in groups for n in g.features if n in by_name and by_name[n].output == "ids"]
  # the owner's own features first, so that an error names the reader that differs
  for owner, table, group, name in sorted(reads, key=lambda r: r[0] != r[2]):
    n = by_name[name].num_ids
    first = sizes.setdefault((owner, table), (name, n))
    if first[1] != n:
      raise ConfigError(f"groups.{group}: feature {name!r} ({n} ids) reads table {table!r} of "
                        f"group {owner!r}, which feature {first[0]!r} gives {first[1]} ids")
  return owners


def check_groups(features, groups) -> None:
  """The checks that need every feature at once: groups embed declared id features, a raw
  column has one dtype, aligned sequences agree, and shared tables agree on dim and size."""
  _check_columns(features)
  _check_aligned(features)
  by_name = {f.name: f for f in features}
  for group in groups:
    for name in group.features:
      if name not in by_name:
        raise ConfigError(f"groups.{group.name}.features: {name!r} is not a declared feature; "
                          f"declared: {', '.join(sorted(by_name))}")
      if by_name[name].output != "ids":
        raise ConfigError(f"groups.{group.name}.features: {name!r} is numeric; groups embed id "
                          "features, numeric features feed the model's dense input")
  table_owners(features, groups)


def id_features(features) -> tuple[Feature, ...]:
  """The features that yield ids (embedded by groups), in declaration order."""
  return tuple(f for f in features if f.output == "ids")


def numeric_features(features) -> tuple[Feature, ...]:
  """The features that yield dense values, in declaration order."""
  return tuple(f for f in features if f.output == "dense")


def dense_width(features) -> int:
  """D of the batch's dense [N, D]."""
  return sum(f.dim for f in numeric_features(features))


def _check_lengths(features, lengths, problems) -> None:
  for f in features:
    if getattr(f, "aligned_with", ""):
      mine, theirs = lengths[f.name], lengths[f.aligned_with]
      other = next(g for g in features if g.name == f.aligned_with)
      problems.report("misaligned_sequence", mine != theirs, lambda row, f=f, other=other,
                      mine=mine, theirs=theirs: (
          f"column {f.column!r} holds {mine[row]} values but column {other.column!r} "
          f"{theirs[row]}; sequence {f.name!r} is aligned with {other.name!r}"))


def _check_finite(features, columns, dense, problems) -> None:
  bad = ~np.isfinite(dense)
  owners = [f for f in numeric_features(features) for _ in range(f.dim)]

  def message(row):
    col = int(np.argmax(bad[row]))
    f = owners[col]
    return (f"column {f.columns[0]!r} holds {show(columns[f.columns[0]][row])}, which feature "
            f"{f.name!r} turns into {dense[row, col]}")

  problems.report("nan_or_inf", bad.any(1), message)


def transform(features, columns: dict[str, np.ndarray],
              where: Callable[[int], str] = lambda row: f"row {row}", *,
              problems: Problems | None = None) -> dict[str, np.ndarray]:
  """numpy path over whole columns: raw columns -> {'ids', 'weights', 'dense'}.

  A bad value raises a DataError naming its row's origin, `where(row)` (file and line); or,
  with `problems` that collect, is reported there as a mask of bad rows (whose outputs hold
  placeholders) for the caller to drop and count.
  """
  problems = problems or Problems(where)
  n = len(next(iter(columns.values())))
  ids, weights, dense, lengths = {}, {}, [], {}
  for f in features:
    out = f.apply(columns, problems)
    if f.output == "ids":
      ids[f.name], weights[f.name] = out["ids"], out["weights"]
      if "lengths" in out:
        lengths[f.name] = out["lengths"]
    else:
      dense.append(out["dense"])
  _check_lengths(features, lengths, problems)
  dense = np.concatenate(dense, 1) if dense else np.zeros((n, 0), np.float32)
  _check_finite(features, columns, dense, problems)
  return {"ids": ids, "weights": weights, "dense": dense}


class TfTransform(tf.Module):
  """TF twin of `transform`, used inside the exported SavedModel.

  A tf.Module so that the vocabulary tables it owns are tracked and saved with the model. A
  request with a bad value (a list of the wrong length, an out-of-range identity id under
  policy "error", an unparsable number) fails with InvalidArgumentError naming the column.
  """

  def __init__(self, features, strip_whitespace: bool = False):
    super().__init__()
    self._features = tuple(features)
    self._strip = strip_whitespace       # data.strip_whitespace: the readers' one rule
    self.vocabularies = {f.name: table for f in self._features
                         if (table := f.tf_table()) is not None}

  def __call__(self, columns: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    batch = tf.shape(next(iter(columns.values())))[0]
    out = self.by_feature(columns, self._features)
    dense = [out["dense"][f.name] for f in numeric_features(self._features)]
    dense = tf.concat(dense, 1) if dense else tf.zeros([batch, 0], tf.float32)
    return {"ids": out["ids"], "weights": out["weights"], "dense": dense}

  def by_feature(self, columns: dict[str, tf.Tensor], features) -> dict[str, dict]:
    """The transform of `features` (some of this module's) on `columns`, keyed by feature:
    {"ids": {name: ...}, "weights": {name: ...}, "dense": {name: [B, dim]}}. The ranking
    signature transforms the user's features on one row and the items' on N."""
    if self._strip:    # ASCII whitespace around strings, as the readers trim it in training
      columns = {k: tf.strings.strip(v) if v.dtype == tf.string else v
                 for k, v in columns.items()}
    outs = {f.name: f.tf_apply(columns, self.vocabularies.get(f.name)) for f in features}
    checks = [tf.debugging.assert_equal(
        outs[f.name]["lengths"], outs[f.aligned_with]["lengths"],
        message=f"sequence {f.name!r} and {f.aligned_with!r} differ in length")
        for f in features if getattr(f, "aligned_with", "") in outs]
    with tf.control_dependencies(checks):
      ids = {f.name: tf.identity(outs[f.name]["ids"]) for f in id_features(features)}
    weights = {f.name: outs[f.name]["weights"] for f in id_features(features)}
    # As the numpy path's _check_finite: a NaN or inf dense value is a bad request.
    dense = {}
    for f in numeric_features(features):
      value = outs[f.name]["dense"]
      check = tf_check(tf.reduce_all(tf.math.is_finite(value), 1),
                       f"column {f.columns[0]!r}: feature {f.name!r} gives NaN or inf",
                       columns[f.columns[0]])
      with tf.control_dependencies([check]):
        dense[f.name] = tf.identity(value)
    return {"ids": ids, "weights": weights, "dense": dense}

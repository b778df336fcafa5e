"""Embedding tables: lookup with combiners, and a fused sparse optimizer on touched rows only.

The train step differentiates the loss with respect to the pooled embeddings (activations of
shape [B, F, D]), never with respect to a table: `apply_gradients` turns those activation
gradients into per-row gradients, sorts and de-duplicates the ids, segment-sums duplicates and
updates only the touched rows of each table and of its optimizer slots. No table-sized
gradient exists and no optimizer sweeps a table, so a step costs the same for a table of 10^4
rows or 10^8.

Tables live in a nested dict `tables[group][feature]` of [rows, dim] arrays, in logical row
order. Small tables are replicated on every device; large ones (a group's `placement`) are
row-sharded over the mesh's `model` axis and go through `sharded_tables` (all_to_all inside
shard_map) when a mesh is given. Both paths share `apply_row_gradients`.
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from recjax import features as features_lib
from recjax import sharded_tables
from recjax.sparse_optim import SparseOptimizer


@dataclasses.dataclass(frozen=True)
class TableSpec:
  group: str
  feature: str
  rows: int                 # stored rows (sharded tables are padded to ROW_ALIGN)
  dim: int
  init_scale: float
  sharded: bool = False

SHARD_ROWS = 1 << 17        # placement "auto" shards tables with at least this many rows


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """Which columns of the batch's `ids` a group looks up, and how it pools multi-ids."""
  name: str
  features: tuple[str, ...]
  columns: tuple[int, ...]
  combiner: str
  sharded: tuple[bool, ...] = ()
  capacity_factor: float = 2.0


def plan(features, groups) -> tuple[tuple[TableSpec, ...], tuple[GroupPlan, ...]]:
  """One table per (group, feature); the group reads its features' columns of `ids`."""
  id_features = features_lib.id_features(features)
  column = {f.name: i for i, f in enumerate(id_features)}
  by_name = {f.name: f for f in id_features}
  tables, plans = [], []
  for group in groups:
    sharded = []
    for name in group.features:
      rows = by_name[name].num_ids
      shard = group.placement == "sharded" or (group.placement == "auto" and rows >= SHARD_ROWS)
      rows = sharded_tables.storage_rows(rows) if shard else rows
      tables.append(TableSpec(group.name, name, rows, group.dim, group.init_scale, shard))
      sharded.append(shard)
    plans.append(GroupPlan(group.name, group.features, tuple(column[n] for n in group.features),
                           group.combiner, tuple(sharded), group.capacity_factor))
  return tuple(tables), tuple(plans)


def init(specs, rng: jax.Array) -> dict[str, dict[str, jax.Array]]:
  tables = {}
  for spec, key in zip(specs, jax.random.split(rng, len(specs))):
    tables.setdefault(spec.group, {})[spec.feature] = spec.init_scale * jax.random.normal(
        key, (spec.rows, spec.dim), jnp.float32)
  return tables


def init_slots(tables, optimizer: SparseOptimizer):
  """Optimizer slots per table: slots[group][feature] = {slot name: array of `rows` rows}."""
  return {group: {feature: optimizer.init_slots(table) for feature, table in by_feature.items()}
          for group, by_feature in tables.items()}


def _coefficients(weights: jax.Array, combiner: str) -> jax.Array:
  """Per-id pooling coefficients [..., L]: pooled = sum_l c_l * table[id_l]."""
  if combiner == "sum":
    return weights
  if combiner == "mean":
    return weights / jnp.maximum(jnp.sum(weights, -1, keepdims=True), 1e-12)
  return weights * jax.lax.rsqrt(jnp.maximum(jnp.sum(weights * weights, -1, keepdims=True), 1e-24))


def _capacity(plan_, flat_ids, mesh) -> int:
  return sharded_tables.capacity(flat_ids.shape[0] // mesh.size, mesh.shape["model"],
                                 plan_.capacity_factor)


def _features(plan_, mesh):
  """(index in group, feature, column, whether to take the sharded path)."""
  for j, (feature, column) in enumerate(zip(plan_.features, plan_.columns)):
    yield j, feature, column, bool(plan_.sharded and plan_.sharded[j] and mesh is not None)


def lookup(tables, plans, ids: jax.Array, weights: jax.Array, mesh=None) -> dict[str, jax.Array]:
  """ids, weights [B, F, L] -> {group: pooled embeddings [B, F_group, D]}.

  With a `mesh`, sharded tables are looked up through all_to_all; without, every table is
  read whole (the replicated path, also used to trace shapes).
  """
  out = {}
  for plan_ in plans:
    pooled = []
    for _, feature, column, sharded in _features(plan_, mesh):
      table, feature_ids = tables[plan_.name][feature], ids[:, column]
      if sharded:
        flat = feature_ids.reshape(-1)
        rows = sharded_tables.lookup(table, flat, mesh, _capacity(plan_, flat, mesh))
        rows = rows.reshape(feature_ids.shape + (table.shape[1],))
      else:
        rows = jnp.take(table, feature_ids, axis=0)                               # [B, L, D]
      coef = _coefficients(weights[:, column], plan_.combiner)
      pooled.append(jnp.einsum("bl,bld->bd", coef, rows))
    out[plan_.name] = jnp.stack(pooled, 1)
  return out


def apply_row_gradients(table, slots, flat_ids, row_grads, optimizer: SparseOptimizer, step):
  """Fused update of the rows named by `flat_ids` [N] from per-id gradients [N, D].

  Duplicates are summed; ids outside the table (padding) are ignored. Only touched rows of the
  table and of its slots are read and written.
  """
  n = flat_ids.shape[0]
  # Sorted unique ids, padded with an out-of-range id whose gather fills and whose scatter drops.
  unique, inverse = jnp.unique(flat_ids, size=n, fill_value=table.shape[0], return_inverse=True)
  summed = jax.ops.segment_sum(row_grads, inverse.reshape(-1), num_segments=n)
  gather = lambda x: x.at[unique].get(mode="fill", fill_value=0)
  rows, slot_rows = optimizer.update_rows(
      gather(table), {k: gather(v) for k, v in slots.items()}, summed, step)
  scatter = lambda x, new: x.at[unique].set(
      new, mode="drop", unique_indices=True, indices_are_sorted=True)
  return scatter(table, rows), {k: scatter(v, slot_rows[k]) for k, v in slots.items()}


def apply_gradients(tables, slots, plans, ids, weights, grads, optimizer: SparseOptimizer,
                    step=0, mesh=None):
  """Applies d loss / d pooled embeddings ({group: [B, F_group, D]}) to the touched rows;
  `step` (the train step) drives learning-rate schedules."""
  apply_rows = lambda t, s, i, g: apply_row_gradients(t, s, i, g, optimizer, step)
  new_tables, new_slots = {}, {}
  for plan_ in plans:
    new_tables[plan_.name], new_slots[plan_.name] = {}, {}
    for j, feature, column, sharded in _features(plan_, mesh):
      coef = _coefficients(weights[:, column], plan_.combiner)                    # [B, L]
      row_grads = coef[:, :, None] * grads[plan_.name][:, j][:, None, :]          # [B, L, D]
      flat_ids = ids[:, column].reshape(-1)
      row_grads = row_grads.reshape(flat_ids.shape[0], -1)
      table, slot = tables[plan_.name][feature], slots[plan_.name][feature]
      if sharded:
        table, slot = sharded_tables.apply_gradients(
            table, slot, flat_ids, row_grads, mesh, _capacity(plan_, flat_ids, mesh), apply_rows)
      else:
        table, slot = apply_rows(table, slot, flat_ids, row_grads)
      new_tables[plan_.name][feature] = table
      new_slots[plan_.name][feature] = slot
  return new_tables, new_slots


def overflow(tables, plans, ids, mesh) -> jax.Array:
  """Ids of this batch beyond the all_to_all capacity (they took the slower path)."""
  total = jnp.zeros((), jnp.int32)
  for plan_ in plans:
    for _, feature, column, sharded in _features(plan_, mesh):
      if sharded:
        flat = ids[:, column].reshape(-1)
        total += sharded_tables.overflow(flat, tables[plan_.name][feature].shape[0], mesh,
                                         _capacity(plan_, flat, mesh))
  return total


def shardings(specs, tree, mesh):
  """NamedShardings for `tables` or `slots` (any leaves with a leading rows dimension)."""
  sharded = {(s.group, s.feature): s.sharded for s in specs}
  return {group: {feature: jax.tree.map(
      lambda x, shard=sharded[(group, feature)]: NamedSharding(
          mesh, P("model", *([None] * (x.ndim - 1))) if shard else P()), leaf)
      for feature, leaf in by_feature.items()} for group, by_feature in tree.items()}

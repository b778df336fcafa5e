"""Embedding tables: lookup with combiners, and a fused sparse optimizer on touched rows only.

The train step differentiates the loss with respect to the pooled embeddings (activations of
shape [B, F, D]), never with respect to a table: `apply_gradients` turns those activation
gradients into per-row gradients, sorts and de-duplicates the ids, segment-sums duplicates and
updates only the touched rows of each table and of its optimizer slots. No table-sized
gradient exists and no optimizer sweeps a table, so a step costs the same for a table of 10^4
rows or 10^8.

Tables live in a nested dict `tables[group][feature]` of [rows, dim] arrays, in logical row
order. This first version keeps every table whole on each device (replicated); the sharded
engine replaces the inside of `lookup` and `apply_gradients`, not their callers.
"""

import dataclasses

import jax
import jax.numpy as jnp

from recjax import features as features_lib
from recjax.sparse_optim import SparseOptimizer


@dataclasses.dataclass(frozen=True)
class TableSpec:
  group: str
  feature: str
  rows: int
  dim: int
  init_scale: float


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """Which columns of the batch's `ids` a group looks up, and how it pools multi-ids."""
  name: str
  features: tuple[str, ...]
  columns: tuple[int, ...]
  combiner: str


def plan(features, groups) -> tuple[tuple[TableSpec, ...], tuple[GroupPlan, ...]]:
  """One table per (group, feature); the group reads its features' columns of `ids`."""
  id_features = features_lib.id_features(features)
  column = {f.name: i for i, f in enumerate(id_features)}
  by_name = {f.name: f for f in id_features}
  tables, plans = [], []
  for group in groups:
    for name in group.features:
      tables.append(TableSpec(group.name, name, by_name[name].num_ids, group.dim, group.init_scale))
    plans.append(GroupPlan(group.name, group.features,
                           tuple(column[n] for n in group.features), group.combiner))
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


def lookup(tables, plans, ids: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """ids, weights [B, F, L] -> {group: pooled embeddings [B, F_group, D]}."""
  out = {}
  for plan_ in plans:
    pooled = []
    for feature, column in zip(plan_.features, plan_.columns):
      rows = jnp.take(tables[plan_.name][feature], ids[:, column], axis=0)   # [B, L, D]
      coef = _coefficients(weights[:, column], plan_.combiner)
      pooled.append(jnp.einsum("bl,bld->bd", coef, rows))
    out[plan_.name] = jnp.stack(pooled, 1)
  return out


def _update_table(table, slots, ids, coef, grad, optimizer: SparseOptimizer, step):
  """Sparse update of one table: ids, coef [B, L]; grad [B, D] (d loss / d pooled)."""
  flat_ids = ids.reshape(-1)
  row_grads = (coef[:, :, None] * grad[:, None, :]).reshape(flat_ids.shape[0], -1)
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
                    step=0):
  """Applies d loss / d pooled embeddings ({group: [B, F_group, D]}) to the touched rows;
  `step` (the train step) drives learning-rate schedules."""
  new_tables, new_slots = {}, {}
  for plan_ in plans:
    new_tables[plan_.name], new_slots[plan_.name] = {}, {}
    for j, (feature, column) in enumerate(zip(plan_.features, plan_.columns)):
      coef = _coefficients(weights[:, column], plan_.combiner)
      table, slot = _update_table(tables[plan_.name][feature], slots[plan_.name][feature],
                                  ids[:, column], coef, grads[plan_.name][:, j], optimizer, step)
      new_tables[plan_.name][feature] = table
      new_slots[plan_.name][feature] = slot
  return new_tables, new_slots

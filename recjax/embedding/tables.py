"""Embedding tables: lookup with combiners, and a fused sparse optimizer on touched rows only.

The train step differentiates the loss with respect to the pooled embeddings (activations of
shape [B, F, D]), never with respect to a table: `apply_gradients` turns those activation
gradients into per-row gradients, de-duplicates the ids (`dedup.unique`, without sorting),
segment-sums duplicates and updates only the touched rows of each table and of its optimizer
slots. No table-sized gradient exists and no optimizer sweeps a table, so a step's work does
not grow with a table's rows (only its memory reads do: see benchmarks/embedding.py).

Tables live in a nested dict `tables[group][table]` of [rows, dim] arrays, in logical row
order; features of a group that name the same `table` share it, and a group with
`tables_from` reads another group's tables (a behaviour sequence and its candidate item): such
a table lives once, under its owning group, and is read and updated once per step for all
its readers. Small tables are replicated
on every device; large ones (a group's `placement`) are row-sharded over the mesh's `model`
axis and go through `sharded_tables` (all_to_all inside shard_map) when a mesh is given. Both
paths share `apply_row_gradients`.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recjax import sharding
from recjax.embedding import dedup
from recjax.features import spec as features_lib
from recjax.embedding import sharded_tables
from recjax.errors import ConfigError
from recjax.embedding.sparse_optim import SparseOptimizer


@dataclasses.dataclass(frozen=True)
class TableSpec:
  group: str                # the group that owns it: the table is tables[group][name]
  name: str                 # the table's name: its features' `table` (default: the feature)
  rows: int                 # stored rows (sharded tables are padded to ROW_ALIGN)
  dim: int
  init_scale: float
  sharded: bool = False

SHARD_ROWS = 1 << 17        # placement "auto" shards tables with at least this many rows


@dataclasses.dataclass(frozen=True)
class GroupPlan:
  """The features a group embeds, the table each reads, and how it pools multi-ids."""
  name: str
  features: tuple[str, ...]
  tables: tuple[str, ...]           # per feature
  combiner: str
  sharded: tuple[str, ...] = ()     # the names of this group's own row-sharded tables
  capacity_factor: float = 2.0
  owners: tuple[str, ...] = ()      # per feature, the group that owns its table (tables_from);
                                    # empty: this group owns all of them

  def owner(self, j: int) -> str:
    return self.owners[j] if self.owners else self.name


table_of = features_lib.table_of


class EmbeddingPlan(NamedTuple):
  """An experiment's tables and how its groups read them: derived once from its features and
  groups (config validation carries it as `Experiment.embedding_plan`). A NamedTuple, so
  `specs, plans = plan(...)` still unpacks."""
  specs: tuple[TableSpec, ...]      # every table of the state tree, once
  groups: tuple[GroupPlan, ...]     # per group, in config order


def plan(features, groups) -> EmbeddingPlan:
  """One table per (group, table name): features of a group that name the same table share
  it (they must agree on its size); the same feature in two groups has a table in each,
  unless a group takes the tables of another (`Group.tables_from`): a table read by several
  groups lives once, under its owner, with the owner's placement and init_scale."""
  by_name = {f.name: f for f in features_lib.id_features(features)}
  owners = features_lib.table_owners(tuple(by_name.values()), groups)
  specs, plans = [], []
  for group in groups:
    lengths = {by_name[n].length for n in group.features}
    if group.combiner == "none" and len(lengths) > 1:
      raise ConfigError(f"groups.{group.name}: a sequence group (combiner 'none') needs "
                        f"features of one length; found lengths {sorted(lengths)}")
    rows, sharded = {}, []
    for name in group.features:
      table = table_of(by_name[name])
      if owners[(group.name, table)] == group.name:
        rows.setdefault(table, by_name[name].num_ids)
    for table, n in rows.items():
      shard = group.placement == "sharded" or (group.placement == "auto" and n >= SHARD_ROWS)
      n = sharded_tables.storage_rows(n) if shard else n
      specs.append(TableSpec(group.name, table, n, group.dim, group.init_scale, shard))
      if shard:
        sharded.append(table)
    tables = tuple(table_of(by_name[n]) for n in group.features)
    feature_owners = tuple(owners[(group.name, t)] for t in tables)
    plans.append(GroupPlan(group.name, group.features, tables, group.combiner, tuple(sharded),
                           group.capacity_factor,
                           feature_owners if group.tables_from else ()))
  return EmbeddingPlan(tuple(specs), tuple(plans))


def init(specs, rng: jax.Array) -> dict[str, dict[str, jax.Array]]:
  tables = {}
  for spec, key in zip(specs, jax.random.split(rng, len(specs))):
    tables.setdefault(spec.group, {})[spec.name] = spec.init_scale * jax.random.normal(
        key, (spec.rows, spec.dim), jnp.float32)
  return tables


def init_slots(tables, optimizer: SparseOptimizer):
  """Optimizer slots per table: slots[group][table] = {slot name: array of `rows` rows}."""
  return {group: {name: optimizer.init_slots(table) for name, table in by_name.items()}
          for group, by_name in tables.items()}


def _coefficients(weights: jax.Array, combiner: str) -> jax.Array:
  """Per-id coefficients [..., L]: pooled = sum_l c_l * table[id_l] (or, for "none", the
  sequence c_l * table[id_l], which zeroes padding)."""
  if combiner in ("sum", "none"):
    return weights
  if combiner == "mean":
    return weights / jnp.maximum(jnp.sum(weights, -1, keepdims=True), 1e-12)
  return weights * jax.lax.rsqrt(jnp.maximum(jnp.sum(weights * weights, -1, keepdims=True), 1e-24))


class Reader(NamedTuple):
  """The features of one group that read a table: their positions in the group."""
  group: GroupPlan
  positions: tuple[int, ...]


class TableRead(NamedTuple):
  """One table of the state tree and this batch's ids for it, from all its readers."""
  owner: GroupPlan                  # the group whose tables hold it
  table: str
  readers: tuple[Reader, ...]
  ids: jax.Array                    # [N] the readers' ids, concatenated and flattened
  sharded: bool                     # read through the all_to_all exchange
  capacity: int                     # ids per device per shard in the exchange (0: unsharded)

  def of(self, tree):
    """This table's entry of a tables[group][table] tree (the tables, or their slots)."""
    return tree[self.owner.name][self.table]

  def features(self):
    """(reader's plan, feature position) for each feature, in the order of `ids`."""
    return [(r.group, j) for r in self.readers for j in r.positions]


def _capacity(plan_, flat_ids, mesh) -> int:
  return sharded_tables.capacity(flat_ids.shape[0] // mesh.size, sharding.row_shards(mesh),
                                 plan_.capacity_factor)


def _tables(plans, ids, mesh):
  """Each table of the state tree once, with every feature of every group that reads it, as
  `TableRead`s. Readers' ids are concatenated along the id axis, not the batch axis, so that
  a device's share of the flat ids is still its own rows of the batch."""
  by_name = {p.name: p for p in plans}
  readers = {}
  for plan_ in plans:
    for j, table in enumerate(plan_.tables):
      readers.setdefault((plan_.owner(j), table), {}).setdefault(plan_.name, []).append(j)
  for (owner, table), by_group in readers.items():
    parts = tuple(Reader(by_name[group], tuple(positions)) for group, positions in by_group.items())
    flat = jnp.concatenate([ids[p.features[j]] for p, positions in parts for j in positions],
                           1).reshape(-1)
    # On a mesh without a model axis to split over, a sharded table is one whole shard: the
    # plain path reads it the same way without the all_to_all bookkeeping.
    sharded = (mesh is not None and sharding.row_shards(mesh) > 1
               and table in by_name[owner].sharded)
    yield TableRead(by_name[owner], table, parts, flat, sharded,
                    _capacity(by_name[owner], flat, mesh) if sharded else 0)


def _split(flat, readers, ids):
  """Undoes `_tables`' concatenation: {(group, feature position): values [B, L, ...]}."""
  first = readers[0]
  flat = flat.reshape((ids[first.group.features[first.positions[0]]].shape[0], -1)
                      + flat.shape[1:])
  out, start = {}, 0
  for plan_, positions in readers:
    for j in positions:
      length = ids[plan_.features[j]].shape[1]
      out[(plan_.name, j)] = flat[:, start:start + length]
      start += length
  return out


MASK = "_mask"       # embedded[group + MASK]: [B, L], 1 on a sequence group's real positions


def lookup(tables, plans, ids: dict, weights: dict, mesh=None) -> dict[str, jax.Array]:
  """ids, weights {feature: [B, L]} -> {group: pooled embeddings [B, F_group, D]}.

  A group with combiner "none" (sequence features of one length L, e.g. the items of a
  behaviour list and their categories) is not pooled: {group: [B, F_group, L, D]}, padding
  positions zero, plus {group + MASK: [B, L]} from its first feature's weights.

  Each table is read once per step for all the features (of all the groups) that read it.
  With a `mesh`, sharded tables go through all_to_all; without, every table is read whole
  (the replicated path, also used to trace shapes).
  """
  rows, sharded = {}, []
  for read in _tables(plans, ids, mesh):
    if read.sharded:
      sharded.append(read)
    else:
      # The feature transforms reject ids outside a table, so no bounds handling is needed
      # ("clip" is XLA's native gather; the default "fill" adds a select per table).
      found = jnp.take(read.of(tables), read.ids, axis=0, mode="clip")
      rows.update(_split(found, read.readers, ids))                               # [B, L, D]
  if sharded:       # all sharded tables in one exchange
    found = sharded_tables.lookup([r.of(tables) for r in sharded], [r.ids for r in sharded],
                                  mesh, [r.capacity for r in sharded])
    for rows_of_table, read in zip(found, sharded):
      rows.update(_split(rows_of_table, read.readers, ids))
  out = {}
  for plan_ in plans:
    coefs = [_coefficients(weights[f], plan_.combiner) for f in plan_.features]
    if plan_.combiner == "none":
      out[plan_.name] = jnp.stack([c[..., None] * rows[(plan_.name, j)]
                                   for j, c in enumerate(coefs)], 1)
      out[plan_.name + MASK] = (weights[plan_.features[0]] != 0).astype(jnp.float32)
    else:
      out[plan_.name] = jnp.stack([jnp.einsum("bl,bld->bd", c, rows[(plan_.name, j)])
                                   for j, c in enumerate(coefs)], 1)
  return out


def apply_row_gradients(table, slots, flat_ids, row_grads, optimizer: SparseOptimizer, step,
                        unique=None):
  """Fused update of the rows named by `flat_ids` [N] from per-id gradients [N, D].

  Duplicates are summed; ids outside the table (padding) are ignored. Only touched rows of the
  table and of its slots are read and written. `unique` (`dedup.unique` of the ids, with ids
  outside the table mapped to `rows`) saves de-duplicating them again.
  """
  rows = table.shape[0]
  if unique is None:
    unique = dedup.unique(jnp.where((flat_ids >= 0) & (flat_ids < rows), flat_ids, rows), rows)
  ids, inverse = unique
  summed = jax.ops.segment_sum(row_grads, inverse, num_segments=flat_ids.shape[0])
  # The padding id `rows` reads the last row (clipped); its update is dropped by the scatter.
  gather = lambda x: x.at[ids].get(mode="clip")
  scatter = lambda x, new: x.at[ids].set(new, mode="drop", unique_indices=True)
  slot_rows = {k: gather(v) for k, v in slots.items()}
  if optimizer.additive:
    # Adding in place reads each row once, in the scatter; gathering the rows first and
    # scattering new values costs about 3 times as much (XLA CPU, 10^5 rows of 16).
    delta, slot_rows = optimizer.row_deltas(slot_rows, summed, step)
    table = table.at[ids].add(delta, mode="drop", unique_indices=True)
  else:
    new_rows, slot_rows = optimizer.update_rows(gather(table), slot_rows, summed, step)
    table = scatter(table, new_rows)
  return table, {k: scatter(v, slot_rows[k]) for k, v in slots.items()}


class RowUpdate(NamedTuple):
  """A sharded table's update this step, handed to the one exchange of all of them."""
  read: TableRead
  ids: jax.Array                    # [N] `read.ids` with padding sent past the table's rows
  grads: jax.Array                  # [N, D] per-id gradients


def _row_grads(coef, grad, combiner):
  """Per-id gradients [B, L, D] from d loss / d output of one feature: [B, D] pooled, or
  [B, L, D] for a sequence ("none")."""
  return coef[..., None] * (grad if combiner == "none" else grad[:, None, :])


def apply_gradients(tables, slots, plans, ids: dict, weights: dict, grads,
                    optimizer: SparseOptimizer, step, mesh=None):
  """Applies d loss / d pooled embeddings ({group: [B, F_group, D]}) to the touched rows;
  `step` (the train step) drives learning-rate schedules.

  A table read by several features or groups is updated once, from the ids of all its
  readers: duplicates across them are summed, as autodiff through every gather would.
  An id of weight 0 (padding) is not touched: it is sent to an out-of-range row, so lazy
  Adam, FTRL and L2 leave its row and slots alone.
  """
  apply_rows = lambda t, s, i, g, **kw: apply_row_gradients(t, s, i, g, optimizer, step, **kw)
  coefs = {(p.name, j): _coefficients(weights[f], p.combiner)
           for p in plans for j, f in enumerate(p.features)}
  new_tables, new_slots, uniques, sharded = {}, {}, {}, []
  for read in _tables(plans, ids, mesh):
    table, slot = read.of(tables), read.of(slots)
    readers = read.features()
    row_grads = jnp.concatenate([_row_grads(coefs[(p.name, j)], grads[p.name][:, j], p.combiner)
                                 for p, j in readers], 1).reshape(-1, table.shape[1])
    weight = jnp.concatenate([weights[p.features[j]] for p, j in readers], 1).reshape(-1)
    rows = table.shape[0]
    flat_ids = jnp.where((weight != 0) & (read.ids >= 0) & (read.ids < rows), read.ids, rows)
    if read.sharded:
      sharded.append(RowUpdate(read, flat_ids, row_grads))
      continue
    if mesh is not None:
      # Every replica applies the whole batch's update: gather the ids and gradients once,
      # then de-duplicate on each device without collectives (XLA's partitioning of the
      # hash rounds' scatters over a batch-sharded array costs ~9x the whole step).
      flat_ids, row_grads = jax.lax.with_sharding_constraint(
          (flat_ids, row_grads), sharding.replicated(mesh))
    # Tables of one size read by the same features (DeepFM's first-order and FM tables)
    # touch the same rows: their ids are de-duplicated once.
    key = (tuple(p.features[j] for p, j in readers), rows)
    if key not in uniques:
      uniques[key] = dedup.unique(flat_ids, rows)
    table, slot = apply_rows(table, slot, flat_ids, row_grads, unique=uniques[key])
    new_tables.setdefault(read.owner.name, {})[read.table] = table
    new_slots.setdefault(read.owner.name, {})[read.table] = slot
  if sharded:       # all sharded tables in one exchange
    updated = sharded_tables.apply_gradients(
        [u.read.of(tables) for u in sharded], [u.read.of(slots) for u in sharded],
        [u.ids for u in sharded], [u.grads for u in sharded], mesh,
        [u.read.capacity for u in sharded], apply_rows)
    for u, (table, slot) in zip(sharded, updated):
      new_tables.setdefault(u.read.owner.name, {})[u.read.table] = table
      new_slots.setdefault(u.read.owner.name, {})[u.read.table] = slot
  return new_tables, new_slots


def overflow(tables, plans, ids: dict, mesh) -> dict[str, jax.Array]:
  """Per group, the ids of this batch beyond the all_to_all capacity (they took the slower
  path); a shared table counts under its owner."""
  counts = {plan_.name: jnp.zeros((), jnp.int32) for plan_ in plans}
  sharded = [read for read in _tables(plans, ids, mesh) if read.sharded]
  if sharded:
    found = sharded_tables.overflow([r.ids for r in sharded],
                                    [r.of(tables).shape[0] for r in sharded], mesh,
                                    [r.capacity for r in sharded])
    for read, count in zip(sharded, found):
      counts[read.owner.name] += count
  return counts


def shardings(specs, tree, mesh):
  """NamedShardings for `tables` or `slots` (any leaves with a leading rows dimension)."""
  sharded = {(s.group, s.name): s.sharded for s in specs}
  return {group: {name: jax.tree.map(
      lambda x, shard=sharded[(group, name)]: sharding.logical(
          mesh, "rows", *([None] * (x.ndim - 1))) if shard else sharding.replicated(mesh), leaf)
      for name, leaf in by_name.items()} for group, by_name in tree.items()}

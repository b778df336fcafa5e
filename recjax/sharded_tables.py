"""Row-sharded tables: lookup and fused sparse update through fixed-capacity all_to_all.

A sharded table is split over the mesh's `model` axis in contiguous row blocks (shard s owns
rows [s*R/M, (s+1)*R/M)), replicated over `data`. Inside `shard_map`, each device:
  1. de-duplicates its ids (sorted, so they come out grouped by owning shard),
  2. packs them into a [M, capacity] buffer, one row per owner, and exchanges it with
     `all_to_all`: every shard receives the rows it must serve,
  3. gathers them locally and sends them back with a second `all_to_all`.
The backward sends each unique id's summed gradient the same way; the owner (with its
replicas over `data`, which all-gather their parts so that every replica applies the same
update) de-duplicates again and applies the fused optimizer to its touched rows only.

Capacity is fixed for static shapes. When any device has more ids for one owner than fit,
both directions take a correct slower path (all-gather the ids, reduce-scatter the rows) for
that step, and `overflow` counts the ids that did not fit: never a silent drop.
"""

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from recjax import dedup

MODEL, DATA = "model", "data"
ROW_ALIGN = 1024        # sharded tables are stored with rows padded to a multiple of this, so
                        # that one checkpoint restores onto any mesh of up to 1024 shards


def storage_rows(rows: int) -> int:
  return -(-rows // ROW_ALIGN) * ROW_ALIGN


def capacity(local_ids: int, shards: int, factor: float) -> int:
  """Ids one device may send to one shard per step: factor x the even share, at most all."""
  return int(min(local_ids, max(1, math.ceil(factor * local_ids / shards))))


def _route(flat_ids, rows_per_shard: int, shards: int, cap: int):
  """Unique ids grouped by owner: their (owner, slot) in the send buffer, and the overflow."""
  n = flat_ids.shape[0]
  sentinel = shards * rows_per_shard
  unique, inverse = dedup.unique_sorted(
      jnp.where((flat_ids >= 0) & (flat_ids < sentinel), flat_ids, sentinel), sentinel)
  owner = unique // rows_per_shard                  # non-decreasing; padding gets owner M
  starts = jnp.searchsorted(unique, jnp.arange(shards) * rows_per_shard)
  slot = jnp.arange(n) - starts[jnp.minimum(owner, shards - 1)]
  valid = owner < shards
  overflow = jnp.sum(valid & (slot >= cap))
  send = jnp.full((shards, cap), rows_per_shard, jnp.int32).at[owner, slot].set(
      (unique % rows_per_shard).astype(jnp.int32), mode="drop")
  return unique, inverse, owner, slot, send, overflow


def _any(overflow):
  return jax.lax.psum(overflow, (DATA, MODEL)) > 0


def _mine(all_ids, rows_per_shard):
  """Local row of each global id if this shard owns it, else the out-of-range row."""
  local = all_ids - jax.lax.axis_index(MODEL) * rows_per_shard
  return jnp.where((local >= 0) & (local < rows_per_shard), local, rows_per_shard)


def _lookup_local(shard, flat_ids, cap):
  rows_per_shard, shards = shard.shape[0], jax.lax.axis_size(MODEL)
  unique, inverse, owner, slot, send, overflow = _route(flat_ids, rows_per_shard, shards, cap)
  gather = lambda ids: shard.at[ids].get(mode="fill", fill_value=0)

  def exchange():
    served = gather(jax.lax.all_to_all(send, MODEL, 0, 0, tiled=True))          # [M, C, D]
    back = jax.lax.all_to_all(served, MODEL, 0, 0, tiled=True)
    return back.at[owner, slot].get(mode="fill", fill_value=0)                   # [n, D]

  def gather_all():
    everyone = jax.lax.all_gather(unique, MODEL)                                 # [M, n]
    rows = gather(_mine(everyone, rows_per_shard))                               # [M, n, D]
    return jax.lax.psum_scatter(rows, MODEL, scatter_dimension=0)

  per_unique = jax.lax.cond(_any(overflow), gather_all, exchange)
  return per_unique[inverse]


def lookup(table, flat_ids, mesh, cap: int):
  """Rows of a `model`-sharded table for batch-sharded ids [N] -> [N, D] (batch-sharded)."""
  batch = P((DATA, MODEL))
  return jax.shard_map(lambda t, i: _lookup_local(t, i, cap), mesh=mesh,
                       in_specs=(P(MODEL, None), batch), out_specs=batch,
                       check_vma=False)(table, flat_ids)


def _update_local(shard, slots, flat_ids, row_grads, apply_rows, cap):
  rows_per_shard, shards = shard.shape[0], jax.lax.axis_size(MODEL)
  unique, inverse, owner, slot, send, overflow = _route(flat_ids, rows_per_shard, shards, cap)
  summed = jax.ops.segment_sum(row_grads, inverse, num_segments=unique.shape[0])

  # Both paths hand over (ids, grads) of one size, M x n, so that the update of the shard
  # happens once, outside the cond (an update inside a cond copies the whole shard).
  def exchange():
    send_grads = jnp.zeros((shards, cap, summed.shape[-1]), summed.dtype).at[owner, slot].set(
        summed, mode="drop")
    ids = jax.lax.all_to_all(send, MODEL, 0, 0, tiled=True)
    grads = jax.lax.all_to_all(send_grads, MODEL, 0, 0, tiled=True)
    pad = [(0, 0), (0, unique.shape[0] - cap)]
    return (jnp.pad(ids, pad, constant_values=rows_per_shard),
            jnp.pad(grads, pad + [(0, 0)]))

  def gather_all():
    return (_mine(jax.lax.all_gather(unique, MODEL), rows_per_shard),
            jax.lax.all_gather(summed, MODEL))

  ids, grads = jax.lax.cond(_any(overflow), gather_all, exchange)
  # Replicas of this shard over `data` saw other rows of the batch: apply all of them.
  ids = jax.lax.all_gather(ids.reshape(-1), DATA, tiled=True)
  grads = jax.lax.all_gather(grads.reshape(-1, grads.shape[-1]), DATA, tiled=True)
  return apply_rows(shard, slots, ids, grads)


def apply_gradients(table, slots, flat_ids, row_grads, mesh, cap: int, apply_rows):
  """Fused sparse update of a `model`-sharded table from per-id gradients [N, D]."""
  batch = P((DATA, MODEL))
  slot_specs = jax.tree.map(lambda s: P(MODEL, *([None] * (s.ndim - 1))), slots)
  return jax.shard_map(
      lambda t, s, i, g: _update_local(t, s, i, g, apply_rows, cap), mesh=mesh,
      in_specs=(P(MODEL, None), slot_specs, batch, batch),
      out_specs=(P(MODEL, None), slot_specs), check_vma=False)(table, slots, flat_ids, row_grads)


def overflow(flat_ids, rows: int, mesh, cap: int):
  """Ids that did not fit their owner's capacity this step, summed over devices."""
  shards = mesh.shape[MODEL]

  def count(ids):
    return jax.lax.psum(_route(ids, rows // shards, shards, cap)[-1], (DATA, MODEL))

  return jax.shard_map(count, mesh=mesh, in_specs=P((DATA, MODEL)), out_specs=P(),
                       check_vma=False)(flat_ids)

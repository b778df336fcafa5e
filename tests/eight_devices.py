"""Checks of the sharded embedding engine on 8 virtual CPU devices; run by test_sharded_tables.

XLA_FLAGS must give 8 host devices before jax is imported, so this runs in its own process.
"""

import jax
import jax.numpy as jnp
import numpy as np

from recjax.embedding import tables as embedding
from recjax.features import spec as features
from recjax import sharding
from recjax.embedding import sparse_optim

assert jax.device_count() == 8, jax.devices()
B, L = 64, 3


def _setup(capacity_factor):
  feats = (features.IdFeature("a", hash_bucket_size=5000), features.IdFeature("b", hash_bucket_size=300))
  groups = (features.Group("g", ("a", "b"), dim=8, placement="sharded",
                           capacity_factor=capacity_factor, combiner="mean"),)
  return embedding.plan(feats, groups)


def _batch(rng):
  ids = {"a": (rng.zipf(1.3, (B, L)) % 5000).astype(np.int32),
         "b": rng.integers(0, 300, (B, L)).astype(np.int32)}
  weights = {n: (rng.random((B, L)) < 0.8).astype(np.float32) for n in ids}
  for w in weights.values():
    w[:, 0] = 1.0
  return ids, weights


def check(model_devices, capacity_factor, optimizer):
  mesh = sharding.make_mesh(model=model_devices)
  specs, plans = _setup(capacity_factor)
  tables = embedding.init(specs, jax.random.key(0))
  slots = embedding.init_slots(tables, optimizer)
  placed = jax.device_put(tables, embedding.shardings(specs, tables, mesh))
  placed_slots = jax.device_put(slots, embedding.shardings(specs, slots, mesh))
  batch_sharding = sharding.batch_sharding(mesh)

  @jax.jit
  def sharded_step(t, s, ids, w, g, step):
    out = embedding.lookup(t, plans, ids, w, mesh)
    t, s = embedding.apply_gradients(t, s, plans, ids, w, g, optimizer, step, mesh)
    return out, t, s, embedding.overflow(t, plans, ids, mesh)

  @jax.jit
  def reference_step(t, s, ids, w, g, step):
    out = embedding.lookup(t, plans, ids, w)
    t, s = embedding.apply_gradients(t, s, plans, ids, w, g, optimizer, step)
    return out, t, s

  rng = np.random.default_rng(1)
  overflow = 0
  for step in range(3):
    ids, w = _batch(rng)
    g = {"g": rng.normal(size=(B, 2, 8)).astype(np.float32)}
    args = [jax.device_put(x, batch_sharding) for x in (ids, w)]
    out, placed, placed_slots, over = sharded_step(placed, placed_slots, *args,
                                                   jax.device_put(g, batch_sharding), step)
    ref, tables, slots = reference_step(tables, slots, ids, w, g, step)
    overflow += sum(int(c) for c in over.values())
    if step == 0:     # same tables: the gathered, pooled rows are bitwise the same
      np.testing.assert_array_equal(np.asarray(out["g"]), np.asarray(ref["g"]))
    else:             # tables then differ by summation order of duplicate-id gradients
      np.testing.assert_allclose(np.asarray(out["g"]), np.asarray(ref["g"]), rtol=1e-5, atol=1e-7)
  for got, want in zip(jax.tree.leaves((placed, placed_slots)), jax.tree.leaves((tables, slots))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
  assert placed["g"]["a"].sharding.spec[0] == "model"
  return overflow


# Every mesh shape with row-wise Adagrad; the other slot layouts (per element, none) on 8
# model shards: the routing does not depend on the optimizer, its slots' shapes do.
for model_devices, name in [(8, "rowwise_adagrad"), (4, "rowwise_adagrad"),
                            (2, "rowwise_adagrad"), (8, "adagrad"), (8, "sgd")]:
  optimizer = sparse_optim.SparseOptimizer(name, learning_rate=0.1)
  assert check(model_devices, 64.0, optimizer) == 0            # room for every id: no overflow
  assert check(model_devices, 0.25, optimizer) > 0             # overflow: the fallback is exact
print("sharded lookup and update equal the replicated reference on 8, 4 and 2 model shards")


# No table-sized temporaries; the state (table and slots) is donated and updated in place.
mesh = sharding.make_mesh()
specs, plans = embedding.plan((features.IdFeature("big", hash_bucket_size=1 << 20),),
                              (features.Group("g", ("big",), dim=16, placement="sharded"),))
optimizer = sparse_optim.SparseOptimizer("rowwise_adagrad")
init_tables = lambda: embedding.init(specs, jax.random.key(0))
init_slots = lambda t: embedding.init_slots(t, optimizer)
table_shapes = jax.eval_shape(init_tables)
tables = jax.jit(init_tables, out_shardings=embedding.shardings(specs, table_shapes, mesh))()
slots = jax.jit(init_slots, out_shardings=embedding.shardings(
    specs, jax.eval_shape(init_slots, table_shapes), mesh))(tables)


def step(t, s, ids, w, v):
  t, s = embedding.apply_gradients(t, s, plans, ids, w, {"g": v}, optimizer, 0, mesh)
  return t, s


ids = jax.device_put({"big": np.arange(4096, dtype=np.int32).reshape(4096, 1) * 97},
                     sharding.batch_sharding(mesh))
w = jax.device_put({"big": np.ones((4096, 1), np.float32)}, sharding.batch_sharding(mesh))
v = jax.device_put(np.ones((4096, 1, 16), np.float32), sharding.batch_sharding(mesh))
compiled = jax.jit(step, donate_argnums=(0, 1)).lower(tables, slots, ids, w, v).compile()
memory = compiled.memory_analysis()
table_bytes_per_device = (1 << 20) * 16 * 4 // 8
assert memory.alias_size_in_bytes >= table_bytes_per_device, memory
assert memory.temp_size_in_bytes < table_bytes_per_device / 4, memory
print(f"aliased {memory.alias_size_in_bytes} B >= table shard {table_bytes_per_device} B; "
      f"temporaries {memory.temp_size_in_bytes} B")

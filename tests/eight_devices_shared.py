"""A table shared across groups (`Group.tables_from`), row-sharded on 8 virtual CPU devices:
lookup, fused update and overflow against the replicated reference; run by test_embedding.

XLA_FLAGS must give 8 host devices before jax is imported, so this runs in its own process.
"""

import jax
import numpy as np

from recjax.embedding import tables as embedding
from recjax.features import spec as features
from recjax import sharding
from recjax.embedding import sparse_optim

assert jax.device_count() == 8, jax.devices()
B, L = 64, 5
FEATURES = (features.IdFeature("item", hash_bucket_size=3000),
            features.SequenceFeature("hist", max_len=L, hash_bucket_size=3000, table="item"))


def check(model_devices, capacity_factor, optimizer):
  groups = (features.Group("target", ("item",), 8, placement="sharded",
                           capacity_factor=capacity_factor),
            features.Group("history", ("hist",), 8, "none", tables_from="target"))
  specs, plans = embedding.plan(FEATURES, groups)
  assert [(s.group, s.name, s.sharded) for s in specs] == [("target", "item", True)]
  mesh = sharding.make_mesh(model=model_devices)
  tables = embedding.init(specs, jax.random.key(0))
  slots = embedding.init_slots(tables, optimizer)
  placed = jax.device_put(tables, embedding.shardings(specs, tables, mesh))
  placed_slots = jax.device_put(slots, embedding.shardings(specs, slots, mesh))

  def step(t, s, ids, w, g, mesh=None):
    out = embedding.lookup(t, plans, ids, w, mesh)
    t, s = embedding.apply_gradients(t, s, plans, ids, w, g, optimizer, 0, mesh)
    over = embedding.overflow(t, plans, ids, mesh) if mesh is not None else {}
    return out, t, s, over

  sharded_step = jax.jit(lambda *a: step(*a, mesh=mesh))
  reference_step = jax.jit(step)
  rng = np.random.default_rng(1)
  overflow = 0
  for _ in range(3):
    ids = {"item": (rng.zipf(1.3, (B, 1)) % 3000).astype(np.int32),
           "hist": (rng.zipf(1.3, (B, L)) % 3000).astype(np.int32)}
    w = {"item": np.ones((B, 1), np.float32),
         "hist": (rng.random((B, L)) < 0.7).astype(np.float32)}
    g = {"target": rng.normal(size=(B, 1, 8)).astype(np.float32),
         "history": rng.normal(size=(B, 1, L, 8)).astype(np.float32)}
    args = jax.device_put((ids, w, g), sharding.batch_sharding(mesh))
    out, placed, placed_slots, over = sharded_step(placed, placed_slots, *args)
    ref, tables, slots, _ = reference_step(tables, slots, ids, w, g)
    overflow += int(over["target"]) + int(over["history"])
    assert int(over["history"]) == 0          # a shared table counts under its owner
    for key in ("target", "history"):
      np.testing.assert_allclose(np.asarray(out[key]), np.asarray(ref[key]), rtol=1e-5, atol=1e-7)
  for got, want in zip(jax.tree.leaves((placed, placed_slots)), jax.tree.leaves((tables, slots))):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-7)
  assert placed["target"]["item"].sharding.spec[0] == "model"
  return overflow


for model_devices in (8, 2):
  optimizer = sparse_optim.SparseOptimizer("rowwise_adagrad", learning_rate=0.1)
  assert check(model_devices, 64.0, optimizer) == 0
  assert check(model_devices, 0.25, optimizer) > 0
print("a table shared by two groups, sharded on 8 and 2 model shards, equals the replicated "
      "reference")

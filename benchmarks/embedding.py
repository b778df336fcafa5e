"""Embedding engine: the cost of a training step against table size, and against the naive step.

  python benchmarks/embedding.py [--devices 8] [--quick] [--steps 20] [--naive-steps 5]

Should reach (../shared/BENCHMARKS.md, "Embedding engine"): `table_size_ratio` at most 1.2
and `speedup_vs_naive` at least 20. Prints one JSON line per configuration and ends with a
JSON line of the two ratios, all measured in this run.

The step is embedding-only: 26 single-id features, dim 16, batch 4096, loss = sum over the
pooled embeddings [B, F, D] times a fixed random vector v [F, D], so d loss / d pooled = v.
The engine's step differentiates with respect to the pooled embeddings, as the train step
does, and hands that gradient to `embedding.apply_gradients` (rowwise adagrad on the touched
rows), jitted with the state donated. Configurations:

  small        26 tables of 10^4 rows (one per feature).
  large        26 tables of 10^6 rows (2.6 x 10^7 rows in all).
  shared       one table of 10^8 rows shared by all 26 features (`table="shared"`): one
               lookup and one de-duplicated update over the 26 x B ids of a step.
  shared_small the same shared layout with 2.6 x 10^5 rows, a control (not in the ratio):
               `shared` over `shared_small` isolates table size from the layout.
  naive_large  the `large` tables trained the textbook way: jax.value_and_grad of the same
               loss with respect to the tables (autodiff through jnp.take, a table-sized
               gradient) and optax.adam over the whole tables, jitted and donated.

Ids are Zipf-distributed (exponent 1.1) ranks, mapped to rows by a multiplicative hash (a
permutation of each table, offset per feature in the shared table), so hot ids land anywhere in
a table as hashed ids do. A few batches are generated before timing. Each step is timed to
completion (state and loss ready); figures are medians after an untimed first step. The sparse
configurations are timed in interleaved rounds (`--rounds`), so that a change of load on a
shared machine hits all of them alike; the load average is printed with each line.

Each line also gives `step_temp_mib`, XLA's temporary memory for the compiled step summed
over devices: a fused sparse step needs no buffer the size of a table, so when this figure grows
with the tables, the step copies them (see the HLO: `copy(state_0...)` before a scatter), and
its time grows with them.

With `--devices N` (N > 1) the script re-runs itself with N fake CPU devices. On any device
count it builds the train step's mesh (`sharding.make_mesh()`), shards the batch over it and
places tables as the engine does (`embedding.shardings`: replicated, or row-sharded for a
group's `placement`, by default tables from 2^17 rows; the naive step's tables and moments are
placed the same way). Every executable is compiled before anything is allocated; a
configuration whose peak (XLA's memory analysis, times N, as fake devices share this host's
memory) would not fit in the memory available is skipped with the reason. `--quick` makes the
large tables 10 times smaller for a fast check; extra XLA flags pass through `XLA_FLAGS`.
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recjax.embedding import tables as embedding
from recjax.embedding import hugepages
from recjax import sharding
from recjax.features import spec as features_lib
from recjax.embedding.sparse_optim import SparseOptimizer

FEATURES, DIM, BATCH = 26, 16, 4096
ZIPF_EXPONENT = 1.1
HASH = 2654435761          # odd and not a multiple of 5: a permutation of any 2^a 5^b rows
BATCHES = 4                # distinct batches cycled through while timing
MEMORY_HEADROOM = 0.8      # use at most this share of the memory available when a config starts
CONFIGS = ["small", "shared_small", "large", "shared", "naive_large"]


def _setup(config: str, quick: bool, placement: str):
  """Features, groups and the ids' layout of one configuration."""
  scale = 10 if quick else 1
  shared = config.startswith("shared")
  if shared:
    rows = FEATURES * 10**4 if config == "shared_small" else 10**8 // scale
  else:
    rows = 10**4 if config == "small" else 10**6 // scale
  names = tuple(f"f{i:02d}" for i in range(FEATURES))
  feature_list = tuple(features_lib.IdFeature(n, hash_bucket_size=rows,
                                              table="shared" if shared else "")
                       for n in names)
  return feature_list, (features_lib.Group("sparse", names, DIM, placement=placement),), rows


def _batches(rows: int, seed: int = 0) -> list[dict]:
  """BATCHES batches of ids {feature: [B, 1]}."""
  rng = np.random.default_rng(seed)
  ranks = (rng.zipf(ZIPF_EXPONENT, (BATCHES, BATCH, FEATURES)) - 1) % rows
  # Each feature gets its own offset so that the features' hot ids do not all collide on
  # the shared table (independent hashes would behave the same); harmless on separate tables.
  offsets = np.arange(FEATURES) * (rows // FEATURES)
  ids = ((ranks * HASH + offsets) % rows).astype(np.int32)
  return [{f"f{j:02d}": batch[:, j:j + 1] for j in range(FEATURES)} for batch in ids]


def _host_bytes(compiled, devices: int) -> int:
  """Host memory an executable holds while it runs: its arguments, outputs that do not reuse an
  argument's buffer, and temporaries (XLA's figures are per device; fake CPU devices all live
  in this host's memory)."""
  m = compiled.memory_analysis()
  return devices * (m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
                    + m.temp_size_in_bytes)


def _available_bytes() -> int:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable:"):
        return int(line.split()[1]) * 1024
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _loss(pooled: dict, v: dict) -> jax.Array:
  return sum(jnp.sum(pooled[g] * v[g]) for g in pooled)


def _sparse_step(plans, v, optimizer, mesh):
  """The engine's step: gradient with respect to the pooled embeddings, fused row update."""
  def step(state, ids, weights):
    tables, slots, count = state
    pooled = embedding.lookup(tables, plans, ids, weights, mesh)
    loss, grads = jax.value_and_grad(_loss)(pooled, v)
    tables, slots = embedding.apply_gradients(tables, slots, plans, ids, weights, grads,
                                              optimizer, count, mesh)
    return (tables, slots, count + 1), loss
  return step


def _naive_step(plans, v, tx):
  """Autodiff through the gather (mesh=None reads every table whole with jnp.take): the
  gradient is table-sized and Adam sweeps every row of every table."""
  def step(state, ids, weights):
    tables, opt_state = state
    loss, grads = jax.value_and_grad(
        lambda t: _loss(embedding.lookup(t, plans, ids, weights), v))(tables)
    updates, opt_state = tx.update(grads, opt_state, tables)
    return (optax.apply_updates(tables, updates), opt_state), loss
  return step


def _time(step, state, batches, steps: int, first: int = 0):
  """Wall times (ms) of `steps` steps from batch `first` on; returns (times, state)."""
  ids, weights = batches
  times, loss = [], None
  for i in range(first, first + steps):
    start = time.perf_counter()
    state, loss = step(state, ids[i % len(ids)], weights[i % len(ids)])
    jax.block_until_ready((state, loss))
    times.append((time.perf_counter() - start) * 1e3)
  if not np.isfinite(float(loss)):
    raise FloatingPointError(f"loss is {float(loss)}")
  return times, state


def _init_key():
  # embedding.init with the default threefry key needs 3 table-sized temporaries (18 GiB
  # besides the 6 GiB table at 10^8 rows); the "rbg" generator needs none. The values differ,
  # which does not change what a step costs.
  return jax.random.key(0, impl="rbg")


class Config:
  """One configuration, compiled, allocated and warmed up: `run(steps)` times more steps."""

  def __init__(self, name: str, args, mesh):
    """Compiles init and step; allocates only if the peak fits in the memory available now
    (after the configurations already allocated)."""
    devices = mesh.size
    self.name, self.times, self.state = name, [], None
    naive = name.startswith("naive_")
    feature_list, groups, rows = _setup(name.removeprefix("naive_"), args.quick, args.placement)
    specs, plans = embedding.plan(feature_list, groups)
    optimizer = SparseOptimizer("rowwise_adagrad", learning_rate=0.05)
    self.result = {"devices": devices, "config": name, "rows_total": sum(s.rows for s in specs)}
    v = {plans[0].name: jnp.asarray(np.random.default_rng(1).normal(
        size=(len(plans[0].features), DIM)).astype(np.float32))}

    # Compile everything ahead of allocating anything, to know the memory each phase needs.
    init = lambda: embedding.init(specs, _init_key())
    shapes = jax.eval_shape(init)
    table_shardings = embedding.shardings(specs, shapes, mesh)
    scalar, batch_sharding = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    init = jax.jit(init, out_shardings=table_shardings).lower().compile()
    if naive:
      tx = optax.adam(1e-3)
      state_init = tx.init
      opt_shardings = _like_tables(jax.eval_shape(tx.init, shapes), table_shardings, scalar)
      state_shardings = (table_shardings, opt_shardings)
      step = _naive_step(plans, v, tx)
    else:
      state_init = lambda t: embedding.init_slots(t, optimizer)
      opt_shardings = embedding.shardings(specs, jax.eval_shape(state_init, shapes), mesh)
      state_shardings = (table_shardings, opt_shardings, scalar)
      step = _sparse_step(plans, v, optimizer, mesh)
    state_shapes = (shapes, jax.eval_shape(state_init, shapes))
    state_init = jax.jit(state_init, in_shardings=(table_shardings,),
                         out_shardings=opt_shardings).lower(shapes).compile()
    if not naive:
      state_shapes += (jax.ShapeDtypeStruct((), jnp.int32),)
    ids = _batches(rows)
    batch_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.int32), ids[0])
    weight_shape = jax.tree.map(lambda x: x.update(dtype=jnp.float32), batch_shape)
    step = jax.jit(step, in_shardings=(state_shardings, batch_sharding, batch_sharding),
                   out_shardings=(state_shardings, None), donate_argnums=0).lower(
        state_shapes, batch_shape, weight_shape).compile()
    # A fused sparse step needs no temporary the size of a table: this figure says if it does.
    self.result["step_temp_mib"] = round(
        devices * step.memory_analysis().temp_size_in_bytes / 2**20, 1)
    need = max(_host_bytes(c, devices) for c in (init, state_init, step))
    have = int(_available_bytes() * MEMORY_HEADROOM)
    if need > have:
      self.result["skipped"] = (f"needs about {need / 2**30:.1f} GiB of host memory at its "
                                f"peak over {devices} device(s), {have / 2**30:.1f} GiB usable")
      return

    ids = [jax.device_put(x, batch_sharding) for x in ids]
    weights = [jax.tree.map(lambda x: jax.device_put(np.ones(x.shape, np.float32), batch_sharding),
                            batch) for batch in ids]
    self.batches, self.step = (ids, weights), step
    tables = init()
    self.state = (tables, state_init(tables))
    hugepages.advise(self.state)        # as train.py does: 2 MiB pages for the tables
    if not naive:
      self.state += (jax.device_put(jnp.zeros((), jnp.int32), scalar),)
    del tables
    _, self.state = _time(step, self.state, self.batches, 1)   # one untimed step
    self.plans, self.mesh, self.naive = plans, mesh, naive

  def run(self, steps: int) -> None:
    times, self.state = _time(self.step, self.state, self.batches, steps, len(self.times) + 1)
    self.times += times

  def finish(self) -> dict:
    """The figures; frees the state."""
    if self.state is None:
      return self.result
    if not self.naive:
      # Ids beyond the all_to_all capacity take a slower path: a reason for a slow step.
      self.result["overflow_ids"] = sum(int(c) for c in jax.jit(
          lambda t, i: embedding.overflow(t, self.plans, i, self.mesh))(
              self.state[0], self.batches[0][0]).values())
    median = float(np.median(self.times))
    self.result.update(
        step_ms_median=round(median, 2),
        step_ms_p10=round(float(np.percentile(self.times, 10)), 2),
        step_ms_p90=round(float(np.percentile(self.times, 90)), 2),
        examples_per_s=round(BATCH / median * 1e3), steps=len(self.times),
        load_average=round(os.getloadavg()[0], 2))   # other work skews the times
    self.state = self.step = None
    return self.result


def _like_tables(opt_shapes, table_shardings, scalar):
  """Shardings of Adam's state: each moment as its table (found by the path's last two dict
  keys, group and feature), the step count replicated."""
  def pick(path, leaf):
    if leaf.ndim < 2:
      return scalar
    group, feature = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)][-2:]
    return table_shardings[group][feature]
  return jax.tree_util.tree_map_with_path(pick, opt_shapes)


def on_devices(n: int):
  """The train step's mesh over `n` devices; for n fake CPU devices, re-runs this script with
  XLA_FLAGS set (the device count is fixed when the backend starts, so it must be in the
  environment of a fresh process) and exits with its status."""
  flag = f"--xla_force_host_platform_device_count={n}"
  if n > 1 and flag not in os.environ.get("XLA_FLAGS", ""):
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip())
    sys.exit(subprocess.run([sys.executable, *sys.argv], env=env).returncode)
  if jax.device_count() < n:
    sys.exit(f"asked for {n} devices, jax sees {jax.device_count()}")
  return sharding.make_mesh(jax.devices()[:n])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--devices", type=int, default=1,
                      help="fake CPU devices (the script re-runs itself with XLA_FLAGS set)")
  parser.add_argument("--quick", action="store_true", help="large tables 10 times smaller")
  parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
  parser.add_argument("--rounds", type=int, default=8,
                      help="interleaved rounds the sparse configurations' steps are split into")
  parser.add_argument("--naive-steps", type=int, default=5, help="timed steps of the naive step")
  parser.add_argument("--placement", default="auto", choices=("auto", "replicated", "sharded"),
                      help="the groups' table placement (the engine's default: auto)")
  parser.add_argument("--only", nargs="*", default=CONFIGS, choices=CONFIGS)
  args = parser.parse_args()

  mesh = on_devices(args.devices)

  # The sparse configurations are timed in interleaved rounds, so that all of them see the
  # same load on a shared machine; the naive one (slow, and only a speedup reference) after.
  sparse = [n for n in args.only if not n.startswith("naive_")]
  configs = [Config(name, args, mesh) for name in sparse]
  for _ in range(args.rounds):
    for config in configs:
      if config.state is not None:
        config.run(max(1, args.steps // args.rounds))
  medians = {}
  for config in configs:
    result = config.finish()
    print(json.dumps(result), flush=True)
    medians[config.name] = result.get("step_ms_median")
  del configs
  gc.collect()      # free the sparse tables before the naive step allocates its own
  for name in [n for n in args.only if n.startswith("naive_")]:
    config = Config(name, args, mesh)
    if config.state is not None:
      config.run(args.naive_steps)
    result = config.finish()
    print(json.dumps(result), flush=True)
    medians[name] = result.get("step_ms_median")

  large = [medians.get(n) for n in ("large", "shared") if medians.get(n)]
  small, naive = medians.get("small"), medians.get("naive_large")
  ratio = max(large) / small if large and small else None
  speedup = naive / medians["large"] if naive and medians.get("large") else None
  print(json.dumps({
      "devices": mesh.size, "quick": args.quick, "placement": args.placement,
      "table_size_ratio": ratio and round(ratio, 3),
      "speedup_vs_naive": speedup and round(speedup, 1),
      "meets_table_size": ratio is not None and ratio <= 1.2,
      "meets_speedup": speedup is not None and speedup >= 20,
      "small_ms": small, "large_ms": medians.get("large"), "shared_ms": medians.get("shared"),
      "naive_ms": naive, "shared_small_ms": medians.get("shared_small"),
      "xla_flags": os.environ.get("XLA_FLAGS", "")}), flush=True)


if __name__ == "__main__":
  main()

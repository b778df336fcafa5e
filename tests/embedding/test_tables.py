"""Tests for recjax.embedding.tables: pooled lookups against a slow numpy loop, and the fused sparse
update against a dense reference (autodiff through jnp.take, then the optimizer over the whole
table), because the sparse path is only trustworthy if it equals the textbook one."""

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax.embedding import tables as embedding
from recjax.embedding import sparse_optim
from recjax.features import spec as features
from recjax.errors import ConfigError

# A numeric feature sits between id features so that the plan's columns are not just 0..F-1.
FEATURES = (
    features.IdFeature("user", hash_bucket_size=40),
    features.NumericFeature("age"),
    features.IdFeature("tags", vocabulary=("a", "b", "c"), num_oov_buckets=2),   # 5 rows
    features.IdFeature("item", hash_bucket_size=30),
)
ROWS = {"user": 40, "tags": 5, "item": 30}
BATCH, LENGTH = 6, 4
# Ids are drawn from the first rows only, so batches repeat ids and most rows stay untouched.
DRAWN = {"user": 7, "tags": 4, "item": 6}
DIM = {"wide": 1, "deep": 3}


def _plan(combiner):
  groups = (features.Group("wide", ("item", "user"), DIM["wide"], combiner, init_scale=0.5),
            features.Group("deep", ("tags", "item", "user"), DIM["deep"], combiner))
  specs, plans = embedding.plan(FEATURES, groups)
  return specs, plans


def _batch(rng):
  """ids, weights {feature: [B, L]} with duplicates within a row and across rows, zero-weight
  padding and one row whose bags are all padding."""
  ids, weights = {}, {}
  for n in ROWS:
    i = rng.integers(0, DRAWN[n], (BATCH, LENGTH)).astype(np.int32)
    i[0, :] = 2                                        # the same id L times in one bag
    i[1, :2] = 3                                       # and twice in another
    w = rng.uniform(0.5, 2.0, i.shape).astype(np.float32)
    w[:, -1] = 0.0                                     # padding at the end of every bag
    w[2, 1:] = 0.0                                     # a bag of one id
    w[3] = 0.0                                         # every bag of row 3 is empty
    ids[n], weights[n] = jnp.asarray(i), jnp.asarray(w)
  return ids, weights


def test_plan_has_a_table_per_group_and_feature():
  specs, plans = _plan("sum")
  assert [(s.group, s.name, s.rows, s.dim) for s in specs] == [
      ("wide", "item", 30, 1), ("wide", "user", 40, 1),
      ("deep", "tags", 5, 3), ("deep", "item", 30, 3), ("deep", "user", 40, 3)]
  assert [(p.name, p.features, p.tables) for p in plans] == [
      ("wide", ("item", "user"), ("item", "user")),
      ("deep", ("tags", "item", "user"), ("tags", "item", "user"))]


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_lookup_equals_numpy_loop(combiner):
  specs, plans = _plan(combiner)
  tables = embedding.init(specs, jax.random.key(0))
  ids, weights = _batch(np.random.default_rng(1))
  pooled = embedding.lookup(tables, plans, ids, weights)
  ids = jax.tree.map(np.asarray, ids)
  weights = jax.tree.map(lambda w: np.asarray(w, np.float64), weights)
  for plan_ in plans:
    dim = tables[plan_.name][plan_.features[0]].shape[1]
    expected = np.zeros((BATCH, len(plan_.features), dim))
    for b in range(BATCH):
      for j, feature in enumerate(plan_.features):
        table = np.asarray(tables[plan_.name][feature], np.float64)
        w = weights[feature][b]
        norm = {"sum": 1.0, "mean": w.sum(), "sqrtn": np.sqrt((w * w).sum())}[combiner]
        if norm == 0:
          continue                                     # an empty bag pools to zeros
        for l in range(LENGTH):
          expected[b, j] += w[l] / norm * table[ids[feature][b, l]]
    assert pooled[plan_.name].shape == expected.shape
    np.testing.assert_allclose(pooled[plan_.name], expected, rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(pooled["deep"][3], 0.0)


def _dense_reference(name, optimizer):
  """(init, step) of the optimizer over whole tables, from full-table gradients."""
  lr, acc0, eps = optimizer.learning_rate, optimizer.initial_accumulator, optimizer.epsilon
  if name in ("sgd", "adagrad"):
    tx = (optax.sgd(lr) if name == "sgd" else
          optax.adagrad(lr, initial_accumulator_value=acc0, eps=eps))

    def step(tables, state, grads):
      updates, state = tx.update(grads, state, tables)
      return optax.apply_updates(tables, updates), state
    return tx.init, step

  def init(tables):
    return jax.tree.map(lambda t: np.full(t.shape[:1], acc0, np.float32), tables)

  def step(tables, state, grads):
    new_tables, new_state = {}, {}
    for group in tables:
      new_tables[group], new_state[group] = {}, {}
      for feature, w in tables[group].items():
        g = np.asarray(grads[group][feature])
        acc = state[group][feature] + np.mean(g * g, -1)
        new_tables[group][feature] = np.asarray(w) - lr * g / np.sqrt(acc + eps)[:, None]
        new_state[group][feature] = acc
    return new_tables, new_state
  return init, step


def _reference_slots(name, state):
  if name == "sgd":
    return None
  if name == "adagrad":
    return state[0].sum_of_squares
  return state


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", ["sgd", "adagrad", "rowwise_adagrad"])
def test_apply_gradients_equals_dense_reference(name, jit):
  optimizer = sparse_optim.SparseOptimizer(name, learning_rate=0.3, initial_accumulator=0.05,
                                        epsilon=1e-6)
  specs, plans = _plan("sqrtn")
  tables = embedding.init(specs, jax.random.key(2))
  slots = embedding.init_slots(tables, optimizer)
  ref_init, ref_step = _dense_reference(name, optimizer)
  ref_tables, ref_state = tables, ref_init(tables)
  start_tables, start_slots = tables, slots
  update = lambda t, s, i, w, g: embedding.apply_gradients(t, s, plans, i, w, g, optimizer, 0)
  if jit:
    update = jax.jit(update)
  rng = np.random.default_rng(3)
  touched = {n: np.zeros(ROWS[n], bool) for n in ROWS}
  for _ in range(4):       # several steps, so that the accumulators feed later updates
    ids, weights = _batch(rng)
    vectors = {p.name: jnp.asarray(rng.normal(size=(BATCH, len(p.features), DIM[p.name])),
                                   jnp.float32) for p in plans}

    def loss(tables):
      pooled = embedding.lookup(tables, plans, ids, weights)
      return sum(jnp.sum(pooled[g] * vectors[g]) for g in pooled)

    ref_tables, ref_state = ref_step(ref_tables, ref_state, jax.grad(loss)(ref_tables))
    # d loss / d pooled is exactly the fixed vector, which is what the train step hands over.
    tables, slots = update(tables, slots, ids, weights, vectors)
    for n in ROWS:
      touched[n][np.unique(np.asarray(ids[n]))] = True

  ref_slots = _reference_slots(name, ref_state)
  for plan_ in plans:
    for feature in plan_.features:
      rows, t = touched[feature], plan_.name
      assert 0 < rows.sum() < ROWS[feature]
      # The summation order differs from the reference's scatter-add, so allow 1e-6 relative
      # plus 1e-7 absolute (one float32 ulp at 1.0, the size of the terms) for an entry that
      # cancels to near zero.
      np.testing.assert_allclose(tables[t][feature][rows], ref_tables[t][feature][rows],
                                 rtol=1e-6, atol=1e-7)
      np.testing.assert_array_equal(tables[t][feature][~rows], start_tables[t][feature][~rows])
      assert not np.array_equal(tables[t][feature][rows], start_tables[t][feature][rows])
      if ref_slots is None:
        assert slots[t][feature] == {}
        continue
      slot, start_slot = slots[t][feature]["accumulator"], start_slots[t][feature]["accumulator"]
      np.testing.assert_allclose(slot[rows], ref_slots[t][feature][rows], rtol=1e-6)
      np.testing.assert_array_equal(slot[~rows], start_slot[~rows])


def test_sequence_group_keeps_positions_zeroes_padding_and_gives_a_mask():
  specs, plans = embedding.plan(FEATURES, (features.Group("seq", ("user", "item"), 3, "none"),))
  tables = embedding.init(specs, jax.random.key(4))
  ids, weights = _batch(np.random.default_rng(5))
  out = embedding.lookup(tables, plans, ids, weights)
  assert out["seq"].shape == (BATCH, 2, LENGTH, 3)
  for j, name in enumerate(("user", "item")):
    expected = (np.asarray(weights[name])[..., None]
                * np.asarray(tables["seq"][name])[np.asarray(ids[name])])
    np.testing.assert_allclose(out["seq"][:, j], expected, rtol=1e-6)
  np.testing.assert_array_equal(out["seq" + embedding.MASK], np.asarray(weights["user"]) != 0)


def _sgd_against_autodiff(groups, ids, weights, lr=0.5):
  """One fused SGD step against the textbook one (autodiff through the lookup, whole table)."""
  specs, plans = embedding.plan(FEATURES, groups)
  tables = embedding.init(specs, jax.random.key(6))
  out = embedding.lookup(tables, plans, ids, weights)
  rng = np.random.default_rng(7)
  vectors = {p.name: jnp.asarray(rng.normal(size=out[p.name].shape), jnp.float32) for p in plans}
  loss = lambda t: sum(jnp.sum(embedding.lookup(t, plans, ids, weights)[g] * v)
                       for g, v in vectors.items())
  expected = jax.tree.map(lambda t, g: t - lr * g, tables, jax.grad(loss)(tables))
  optimizer = sparse_optim.SparseOptimizer("sgd", learning_rate=lr)
  got, _ = embedding.apply_gradients(tables, embedding.init_slots(tables, optimizer), plans, ids,
                                     weights, vectors, optimizer, 0)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, expected)


def test_sequence_group_update_equals_autodiff():
  ids, weights = _batch(np.random.default_rng(8))
  _sgd_against_autodiff((features.Group("seq", ("user", "item"), 3, "none"),), ids, weights)


def test_features_naming_one_table_share_it_in_lookup_and_update():
  shared = (features.IdFeature("clicked", hash_bucket_size=30, table="item"),
            features.IdFeature("item", hash_bucket_size=30))
  specs, plans = embedding.plan(shared, (features.Group("g", ("clicked", "item"), 4, "mean"),))
  assert [(s.name, s.rows) for s in specs] == [("item", 30)] and plans[0].tables == ("item", "item")
  rng = np.random.default_rng(9)
  ids = {n: jnp.asarray(rng.integers(0, 5, (BATCH, LENGTH)), jnp.int32) for n in ("clicked", "item")}
  weights = {n: jnp.ones((BATCH, LENGTH), jnp.float32) for n in ids}
  tables = embedding.init(specs, jax.random.key(1))
  out = embedding.lookup(tables, plans, ids, weights)
  for j, n in enumerate(("clicked", "item")):     # both read the one table
    np.testing.assert_allclose(out["g"][:, j], np.asarray(tables["g"]["item"])[np.asarray(ids[n])]
                               .mean(1), rtol=1e-6)
  # Ids of both features hit the same rows: the fused update sums them as autodiff does.
  optimizer = sparse_optim.SparseOptimizer("sgd", learning_rate=0.5)
  vectors = {"g": jnp.asarray(rng.normal(size=(BATCH, 2, 4)), jnp.float32)}
  loss = lambda t: jnp.sum(embedding.lookup(t, plans, ids, weights)["g"] * vectors["g"])
  expected = tables["g"]["item"] - 0.5 * jax.grad(loss)(tables)["g"]["item"]
  got, _ = embedding.apply_gradients(tables, embedding.init_slots(tables, optimizer), plans, ids,
                                     weights, vectors, optimizer, 0)
  np.testing.assert_allclose(got["g"]["item"], expected, rtol=1e-6, atol=1e-7)


def test_a_sequence_group_needs_features_of_one_length():
  class Tag(features.IdFeature):
    @property
    def length(self):
      return 5
  with pytest.raises(ConfigError, match="needs features of one length"):
    embedding.plan((Tag("tags", hash_bucket_size=9), features.IdFeature("item", hash_bucket_size=9)),
                   (features.Group("seq", ("tags", "item"), 3, "none"),))


# ---- tables shared across groups (Group.tables_from) -----------------------------------------

# The candidate item (pooled `target` group) and the behaviour list (`history`, a sequence
# group) read one item table; `history` also embeds categories in a table of its own.
CROSS = (features.IdFeature("item", hash_bucket_size=30),
         features.IdFeature("user", hash_bucket_size=40),
         features.SequenceFeature("hist", max_len=LENGTH, hash_bucket_size=30, table="item"),
         features.SequenceFeature("hist_tags", max_len=LENGTH, hash_bucket_size=5,
                                  aligned_with="hist"))


def _cross_groups(placement="auto"):
  return (features.Group("history", ("hist", "hist_tags"), 3, "none", tables_from="target"),
          features.Group("target", ("item", "user"), 3, "mean", placement=placement,
                         init_scale=0.5))


def _cross_batch(rng):
  ids, weights = {}, {}
  for name, rows, draw in (("item", 30, 6), ("user", 40, 7), ("hist", 30, 6),
                           ("hist_tags", 5, 4)):
    length = 1 if name in ("item", "user") else LENGTH
    ids[name] = jnp.asarray(rng.integers(0, draw, (BATCH, length)), jnp.int32)
    w = np.ones((BATCH, length), np.float32)
    if length > 1:
      w[:, -1] = 0.0                             # padding at the end of every history
      w[2, 1:] = 0.0
    weights[name] = jnp.asarray(w)
  return ids, weights


def test_a_table_read_by_two_groups_lives_once_under_its_owner():
  specs, plans = embedding.plan(CROSS, _cross_groups())
  assert [(s.group, s.name, s.rows, s.dim, s.init_scale) for s in specs] == [
      ("history", "hist_tags", 5, 3, 0.05), ("target", "item", 30, 3, 0.5),
      ("target", "user", 40, 3, 0.5)]
  assert plans[0].tables == ("item", "hist_tags") and plans[0].owners == ("target", "history")
  assert plans[1].owners == () and plans[1].owner(0) == "target"
  tables = embedding.init(specs, jax.random.key(0))
  assert jax.tree.map(jnp.shape, tables) == {"history": {"hist_tags": (5, 3)},
                                             "target": {"item": (30, 3), "user": (40, 3)}}
  ids, weights = _cross_batch(np.random.default_rng(0))
  out = embedding.lookup(tables, plans, ids, weights)
  item = np.asarray(tables["target"]["item"])
  np.testing.assert_allclose(out["history"][:, 0],
                             np.asarray(weights["hist"])[..., None] * item[np.asarray(ids["hist"])])
  np.testing.assert_allclose(out["target"][:, 0], item[np.asarray(ids["item"])[:, 0]])


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rowwise_adagrad"])
def test_update_of_a_table_read_by_two_groups_equals_dense_reference(name):
  """Autodiff through both gathers, then the optimizer over the whole table: the one fused
  update from the de-duplicated ids of both groups must equal it on the touched rows and
  leave the other rows bitwise alone."""
  optimizer = sparse_optim.SparseOptimizer(name, learning_rate=0.3, initial_accumulator=0.05,
                                           epsilon=1e-6)
  specs, plans = embedding.plan(CROSS, _cross_groups())
  start_tables = tables = embedding.init(specs, jax.random.key(2))
  start_slots = slots = embedding.init_slots(tables, optimizer)
  ref_init, ref_step = _dense_reference(name, optimizer)
  ref_tables, ref_state = tables, ref_init(tables)
  update = jax.jit(lambda t, s, i, w, g: embedding.apply_gradients(t, s, plans, i, w, g,
                                                                   optimizer, 0))
  rng = np.random.default_rng(3)
  touched = {"item": np.zeros(30, bool), "user": np.zeros(40, bool), "hist_tags": np.zeros(5, bool)}
  for _ in range(3):
    ids, weights = _cross_batch(rng)
    out = embedding.lookup(tables, plans, ids, weights)
    vectors = {g: jnp.asarray(rng.normal(size=out[g].shape), jnp.float32)
               for g in ("history", "target")}

    def loss(tables):
      pooled = embedding.lookup(tables, plans, ids, weights)
      return sum(jnp.sum(pooled[g] * v) for g, v in vectors.items())

    ref_tables, ref_state = ref_step(ref_tables, ref_state, jax.grad(loss)(ref_tables))
    tables, slots = update(tables, slots, ids, weights, vectors)
    for table, readers in (("item", ("item", "hist")), ("user", ("user",)),
                           ("hist_tags", ("hist_tags",))):
      for feature in readers:
        touched[table][np.asarray(ids[feature])[np.asarray(weights[feature]) != 0]] = True
  ref_slots = _reference_slots(name, ref_state)
  for group, table in (("target", "item"), ("target", "user"), ("history", "hist_tags")):
    rows = touched[table]
    assert 0 < rows.sum() < len(rows)
    got, want = tables[group][table], ref_tables[group][table]
    np.testing.assert_allclose(got[rows], want[rows], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[~rows], start_tables[group][table][~rows])
    if ref_slots is not None:
      slot = slots[group][table]["accumulator"]
      np.testing.assert_allclose(slot[rows], ref_slots[group][table][rows], rtol=1e-6)
      np.testing.assert_array_equal(slot[~rows], start_slots[group][table]["accumulator"][~rows])


@pytest.mark.parametrize("change, message", [
    (dict(tables_from="nowhere"), r"groups.history.tables_from: 'nowhere' is not a group"),
    (dict(dim=4), r"groups.history.dim: 4, but it reads tables of group 'target' of dim 3"),
    (dict(features=("hist_tags",)), r"groups.history.tables_from: group 'target' has none of "
                                    r"the tables 'history' reads \(hist_tags\)"),
])
def test_bad_table_sharing_is_a_config_error(change, message):
  history, target = _cross_groups()
  groups = (features.Group(**{**dataclasses.asdict(history), **change}), target)
  with pytest.raises(ConfigError, match=message):
    features.check_groups(CROSS, groups)


def test_table_sharing_checks_sizes_and_cycles():
  small = CROSS[:2] + (features.SequenceFeature("hist", max_len=LENGTH, hash_bucket_size=20,
                                                table="item"),) + CROSS[3:]
  with pytest.raises(ConfigError, match=r"groups.history: feature 'hist' \(20 ids\) reads table "
                                        r"'item' of group 'target', which feature 'item' gives 30"):
    embedding.plan(small, _cross_groups())
  a = features.Group("a", ("item",), 3, tables_from="b")
  b = features.Group("b", ("item",), 3, tables_from="a")
  with pytest.raises(ConfigError, match=r"groups.a.tables_from: a -> b -> a is a cycle"):
    embedding.plan(CROSS, (a, b))
  with pytest.raises(ValueError, match="tables_from names the group itself"):
    features.Group("a", ("item",), 3, tables_from="a")


def test_a_shared_table_row_sharded_on_8_devices_equals_the_replicated_reference():
  script = pathlib.Path(__file__).parents[1] / "eight_devices_shared.py"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=script.parent.parent, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "equals the replicated reference" in result.stdout

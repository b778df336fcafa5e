"""Tests for recjax.embedding.sparse_optim, driven through the real engine (embedding.apply_gradients) and
compared with dense references over whole tables: optax.adam, a numpy FTRL from the paper
(itself checked against TensorFlow's kernel), numpy sgd / adagrad / lazy Adam. A fused sparse
optimizer is only trustworthy if it equals the textbook one on the rows it touches and leaves
every other row, and its slots, bitwise alone."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.embedding import tables as embedding
from recjax.features import spec as features
from recjax.errors import ConfigError
from recjax.embedding.sparse_optim import SparseOptimizer

FEATURES = (
    features.IdFeature("user", hash_bucket_size=40),
    features.IdFeature("tags", vocabulary=("a", "b", "c"), num_oov_buckets=2),   # 5 rows
)
GROUPS = (features.Group("deep", ("user", "tags"), 3, "sqrtn"),
          features.Group("wide", ("user",), 1, "sum", init_scale=0.5))
ROWS, COLUMN = {"user": 40, "tags": 5}, {"user": 0, "tags": 1}
BATCH, LENGTH = 5, 3
USERS = 12          # user ids come from the first 12 of 40 rows: repeats, and rows left out


def _batch(rng):
  """ids, weights [B, 2, L]: duplicates within and across bags, zero-weight padding, a row of
  empty bags, and every tag id in every batch (so the tags table is touched at every step)."""
  ids = np.stack([rng.integers(0, USERS, (BATCH, LENGTH)),
                  rng.integers(0, ROWS["tags"], (BATCH, LENGTH))], 1).astype(np.int32)
  ids[0] = 2                                     # the same id L times in one bag
  ids[1, :, :2] = 3                              # and twice in another
  ids[3, 1, :2], ids[4, 1, :2] = (0, 1), (3, 4)
  weights = rng.uniform(0.5, 2.0, ids.shape).astype(np.float32)
  weights[:, :, -1] = 0.0                        # in-range padding: not a touch
  weights[2] = 0.0                               # every bag of row 2 is empty
  return jnp.asarray(ids), jnp.asarray(weights)


SPECS, PLANS = embedding.plan(FEATURES, GROUPS)


@jax.jit
def _by_feature(x):
  """[B, 2, L] -> the batch's layout, {feature: [B, L]}."""
  return {f: x[:, c] for f, c in COLUMN.items()}


def _dense_grads(tables, ids, weights, vectors):
  """Full-table gradients of loss = sum(pooled * vectors), by autodiff through jnp.take: the
  textbook gradient, with duplicate ids scatter-added."""
  def loss(tables):
    pooled = embedding.lookup(tables, PLANS, _by_feature(ids), _by_feature(weights))
    return sum(jnp.sum(pooled[g] * vectors[g]) for g in pooled)
  return jax.grad(loss)(tables)


def _vectors(rng):
  """d loss / d pooled per group, which is what the train step hands the engine."""
  return {p.name: jnp.asarray(rng.normal(size=(BATCH, len(p.features), 3 if p.name == "deep"
                                               else 1)), jnp.float32) for p in PLANS}


class Run:
  """Tables and slots of one optimizer, stepped through the engine (eagerly or jitted)."""

  def __init__(self, optimizer, jit, seed=0):
    self.tables = embedding.init(SPECS, jax.random.key(seed))
    self.slots = embedding.init_slots(self.tables, optimizer)
    update = lambda t, s, i, w, g, step: embedding.apply_gradients(
        t, s, PLANS, i, w, g, optimizer, step)
    self.update = jax.jit(update) if jit else update

  def step(self, ids, weights, vectors, step):
    self.tables, self.slots = self.update(self.tables, self.slots, _by_feature(ids),
                                          _by_feature(weights), vectors, jnp.int32(step))

  def leaves(self):
    """(group, feature, table, slots) of every table."""
    for group, by_feature in self.tables.items():
      for feature, table in by_feature.items():
        yield group, feature, table, self.slots[group][feature]


def _ftrl(opt, w, z, n, g, lr):
  """FTRL-Proximal, per coordinate, as Algorithm 1 of McMahan et al. (2013) writes it, with
  the paper's lambda_2 = 2 * ftrl_l2 (TF's l2 multiplies w^2, the paper's (1/2) w^2)."""
  sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / lr
  z = z + g - sigma * w
  n = n + g * g
  lambda2 = 2 * np.float32(opt.ftrl_l2)
  with np.errstate(divide="ignore", invalid="ignore"):
    w = -(z - np.sign(z) * opt.ftrl_l1) / ((opt.ftrl_beta + np.sqrt(n)) / lr + lambda2)
  return np.where(np.abs(z) <= opt.ftrl_l1, 0, w).astype(np.float32), z, n


def _reference_init(opt, table):
  shape, acc = table.shape, np.float32(opt.initial_accumulator)
  zeros = np.zeros(shape, np.float32)
  return {"sgd": {}, "adagrad": {"accumulator": np.full(shape, acc)},
          "rowwise_adagrad": {"accumulator": np.full(shape[:1], acc)},
          "adam": {"m": zeros, "v": zeros}, "ftrl": {"z": zeros, "n": np.full(shape, acc)}}[opt.name]


def _reference_step(opt, w, slots, g, touched, step):
  """The textbook optimizer on a whole table in numpy float32, kept where `touched` (the lazy
  semantics: a row of the batch moves, whatever its gradient; any other row keeps its state)."""
  lr = np.float32(opt.learning_rate_at(step))
  g = g + np.float32(opt.weight_decay) * w                       # L2 on touched rows only
  if opt.name == "sgd":
    new_w, new = w - lr * g, {}
  elif opt.name == "adagrad":
    acc = slots["accumulator"] + g * g
    new_w, new = w - lr * g / np.sqrt(acc + np.float32(opt.epsilon)), {"accumulator": acc}
  elif opt.name == "rowwise_adagrad":
    acc = slots["accumulator"] + np.mean(g * g, -1)
    new_w = w - lr * g / np.sqrt(acc + np.float32(opt.epsilon))[:, None]
    new = {"accumulator": acc}
  elif opt.name == "adam":
    # Scalars rounded as optax rounds them: 1 - b in Python floats, then b^t in float32. Both
    # cancel (1 - b2 = 1e-3), so one float32 ulp of b2 or of b2^t is already 1e-5 of them.
    b1, b2, t = opt.beta1, opt.beta2, np.float32(step + 1)
    m, v = b1 * slots["m"] + (1 - b1) * g, b2 * slots["v"] + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - np.float32(b1) ** t), v / (1 - np.float32(b2) ** t)
    new_w, new = w - lr * m_hat / (np.sqrt(v_hat) + np.float32(opt.epsilon)), {"m": m, "v": v}
  else:
    new_w, z, n = _ftrl(opt, w, slots["z"], slots["n"], g, lr)
    new = {"z": z, "n": n}
  keep = lambda new, old: np.where(touched.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)
  return (keep(new_w, w).astype(np.float32),
          {k: keep(new[k], v).astype(np.float32) for k, v in slots.items()})


def _close(actual, expected):
  # The engine segment-sums duplicates in another order than autodiff's scatter-add (and jit
  # may reassociate), so allow 1e-6 relative, plus for an entry that cancels to near zero one
  # float32 ulp at the size of the terms it cancels from: 1e-7 for tables and slots of entries
  # below 1, and proportionally more for FTRL's z, a running sum of gradients of a few units.
  atol = 1e-7 * max(1.0, float(np.max(np.abs(expected))))
  np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=atol)


OPTIMIZERS = {
    "sgd": SparseOptimizer("sgd", learning_rate=0.3),
    "adagrad": SparseOptimizer("adagrad", learning_rate=0.3, initial_accumulator=0.05,
                               epsilon=1e-6),
    "rowwise_adagrad": SparseOptimizer("rowwise_adagrad", learning_rate=0.3),
    "adam": SparseOptimizer("adam", learning_rate=0.05),
    # l1 large enough that some touched elements are clamped to exactly 0.
    "ftrl": SparseOptimizer("ftrl", learning_rate=0.5, ftrl_l1=0.3, ftrl_l2=0.1, ftrl_beta=0.5),
    "sgd_decay": SparseOptimizer("sgd", learning_rate=0.3, weight_decay=0.2),
    "adam_decay": SparseOptimizer("adam", learning_rate=0.05, weight_decay=0.2),
    "ftrl_decay": SparseOptimizer("ftrl", learning_rate=0.5, ftrl_l1=0.3, weight_decay=0.2),
    "adagrad_cosine": SparseOptimizer("adagrad", learning_rate=0.3, warmup_steps=2,
                                      decay="cosine", decay_steps=3),
    "ftrl_exponential": SparseOptimizer("ftrl", learning_rate=0.5, decay="exponential",
                                        decay_steps=2, decay_rate=0.5),
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("key", OPTIMIZERS)
def test_sparse_update_equals_dense_reference(key, jit):
  optimizer = OPTIMIZERS[key]
  run = Run(optimizer, jit)
  ref = {(g, f): (np.asarray(t), _reference_init(optimizer, t)) for g, f, t, _ in run.leaves()}
  for g, f, _, slots in run.leaves():
    jax.tree.map(np.testing.assert_array_equal, slots, ref[g, f][1])
  start = {(g, f): np.asarray(t) for g, f, t, _ in run.leaves()}
  rng = np.random.default_rng(1)
  for step in range(4):     # several steps: slots and schedules feed later updates
    ids, weights = _batch(rng)
    vectors = _vectors(rng)
    grads = jax.tree.map(np.asarray, _dense_grads(run.tables, ids, weights, vectors))
    before = {(g, f): (np.asarray(t), jax.tree.map(np.asarray, s)) for g, f, t, s in run.leaves()}
    run.step(ids, weights, vectors, step)
    for g, f, table, slots in run.leaves():
      touched = np.zeros(ROWS[f], bool)
      # Ids of weight 0 (padding) pool nothing and count as untouched.
      real = np.asarray(weights)[:, COLUMN[f]] != 0
      touched[np.unique(np.asarray(ids)[:, COLUMN[f]][real])] = True
      assert touched.sum() > 0 and (f == "tags" or not touched.all())
      ref[g, f] = _reference_step(optimizer, *ref[g, f], grads[g][f], touched, step)
      _close(table, ref[g, f][0])
      for name in slots:
        _close(slots[name], ref[g, f][1][name])
      # A row not in this batch keeps its value and every slot bitwise.
      np.testing.assert_array_equal(table[~touched], before[g, f][0][~touched])
      for name in slots:
        np.testing.assert_array_equal(slots[name][~touched], before[g, f][1][name][~touched])
  for g, f, table, _ in run.leaves():
    changed = np.any(np.asarray(table) != start[g, f], -1)
    assert changed.any() and not changed[USERS:].any()
  if optimizer.name == "ftrl" and optimizer.ftrl_l1:    # the L1 clamp was exercised
    deep = np.asarray(run.tables["deep"]["user"][:USERS])
    assert 0 < np.sum(deep == 0) < deep.size


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("schedule", ["constant", "warmup_cosine"])
def test_adam_on_a_table_touched_every_step_equals_optax(schedule, jit):
  kwargs = {"constant": {}, "warmup_cosine": dict(warmup_steps=2, decay="cosine", decay_steps=4)}
  optimizer = SparseOptimizer("adam", learning_rate=0.05, beta1=0.8, beta2=0.99, **kwargs[schedule])
  run = Run(optimizer, jit)
  # optax counts steps from 0 as the engine's `step` does, so the same schedule feeds both.
  tx = optax.adam(optimizer.learning_rate_at, b1=0.8, b2=0.99, eps=optimizer.epsilon)
  table = run.tables["deep"]["tags"]
  state = tx.init(table)
  rng = np.random.default_rng(2)
  for step in range(6):
    ids, weights = _batch(rng)
    vectors = _vectors(rng)
    grad = _dense_grads(run.tables, ids, weights, vectors)["deep"]["tags"]
    updates, state = tx.update(grad, state, table)
    table = optax.apply_updates(table, updates)
    run.step(ids, weights, vectors, step)
    _close(run.tables["deep"]["tags"], table)
    _close(run.slots["deep"]["tags"]["m"], state[0].mu)
    _close(run.slots["deep"]["tags"]["v"], state[0].nu)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_adam_is_lazy_on_rows_left_out(jit):
  """Row 5 is in steps 0 and 2, not in step 1: it keeps m, v and value through step 1, and
  step 2 decays its moments once (not twice, as dense Adam would) with bias correction t=3."""
  optimizer = SparseOptimizer("adam", learning_rate=0.1)
  run = Run(optimizer, jit)
  ones = jnp.ones((BATCH, 2, LENGTH), jnp.float32)
  vectors = _vectors(np.random.default_rng(3))
  states = []
  for step, user in enumerate((5, 6, 5)):
    ids = jnp.full((BATCH, 2, LENGTH), user, jnp.int32).at[:, 1].set(0)
    run.step(ids, ones, vectors, step)
    states.append(jax.tree.map(lambda x: np.asarray(x[5]),
                               (run.tables["deep"]["user"], run.slots["deep"]["user"])))
  jax.tree.map(np.testing.assert_array_equal, states[1], states[0])
  # Both steps give row 5 the same summed gradient: L ids of coefficient 1/sqrt(L) (sqrtn of
  # unit weights) in each of the B bags.
  g = np.float32(np.sqrt(LENGTH)) * np.sum(np.asarray(vectors["deep"])[:, 0], 0, keepdims=True)
  (w, slots), (new_w, new_slots) = jax.tree.map(lambda x: x[None], states[1:])
  expected_w, expected_slots = _reference_step(optimizer, w, slots, g, np.ones(1, bool), step=2)
  _close(new_w, expected_w)
  jax.tree.map(_close, new_slots, expected_slots)
  dense_m = 0.9 * (0.9 * slots["m"]) + 0.1 * g                   # what dense Adam would hold
  assert not np.allclose(new_slots["m"], dense_m, rtol=1e-3)


def test_ftrl_reference_equals_tensorflow_kernel():
  """The numpy FTRL that the engine is checked against equals TF's own ApplyFtrl (beta enters
  TF as l2 + beta / (2 lr), as tf.keras.optimizers.Ftrl does)."""
  opt = SparseOptimizer("ftrl", learning_rate=0.5, ftrl_l1=0.3, ftrl_l2=0.2, ftrl_beta=0.7)
  rng = np.random.default_rng(4)
  w = rng.normal(size=(6, 4)).astype(np.float32)
  z, n = np.zeros_like(w), np.full_like(w, opt.initial_accumulator)
  var, accum, linear = tf.Variable(w), tf.Variable(n), tf.Variable(z)
  for _ in range(3):
    g = rng.normal(size=w.shape).astype(np.float32)
    w, z, n = _ftrl(opt, w, z, n, g, np.float32(opt.learning_rate))
    tf.raw_ops.ResourceApplyFtrl(
        var=var.handle, accum=accum.handle, linear=linear.handle, grad=g, lr=opt.learning_rate,
        l1=opt.ftrl_l1, l2=opt.ftrl_l2 + opt.ftrl_beta / (2 * opt.learning_rate), lr_power=-0.5)
    _close(w, var.numpy())
    _close(z, linear.numpy())
    _close(n, accum.numpy())
  assert 0 < np.sum(w == 0) < w.size


SCHEDULES = [
    (dict(), [(0, 0.2), (7, 0.2), (10**6, 0.2)]),
    (dict(warmup_steps=10), [(0, 0.0), (5, 0.1), (10, 0.2), (500, 0.2)]),
    (dict(warmup_steps=10, decay="cosine", decay_steps=100),
     [(5, 0.1), (10, 0.2), (60, 0.1), (110, 0.0), (10**6, 0.0)]),
    (dict(decay="exponential", decay_steps=100, decay_rate=0.5),
     [(0, 0.2), (50, 0.2 * 0.5 ** 0.5), (100, 0.1), (300, 0.025)]),
    (dict(warmup_steps=4, decay="exponential", decay_steps=10, decay_rate=0.5),
     [(2, 0.1), (4, 0.2), (14, 0.1)]),
]


@pytest.mark.parametrize("kwargs,expected", SCHEDULES)
def test_learning_rate_at_values(kwargs, expected):
  optimizer = SparseOptimizer(learning_rate=0.2, **kwargs)
  jitted = jax.jit(optimizer.learning_rate_at)
  for step, rate in expected:
    eager = np.float32(optimizer.learning_rate_at(jnp.int32(step)))
    np.testing.assert_allclose(eager, rate, rtol=1e-6, atol=0, err_msg=f"step {step}")
    np.testing.assert_array_equal(np.float32(optimizer.learning_rate_at(step)), eager)  # int step
    np.testing.assert_array_equal(jitted(jnp.int32(step)), eager)       # jit: the same rates


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl"])
def test_update_at_a_scheduled_rate_equals_update_at_that_constant_rate(name):
  # At step 5 both schedules give exactly half of 0.2 (halving is exact in binary floats), so
  # the updates are bitwise equal. Eagerly: under jit, XLA may reassociate a product with the
  # constant rate (scheduled rates under jit are checked against references above).
  schedule = (dict(decay="exponential", decay_steps=10, decay_rate=0.25) if name == "ftrl"
              else dict(warmup_steps=10))
  scheduled = SparseOptimizer(name, learning_rate=0.2, **schedule)
  constant = SparseOptimizer(name, learning_rate=0.1)
  assert scheduled.learning_rate_at(5) == np.float32(0.1)
  rng = np.random.default_rng(5)
  ids, weights = _batch(rng)
  results = []
  for optimizer in (scheduled, constant):
    run = Run(optimizer, jit=False)
    start = run.tables["deep"]["tags"]
    run.step(ids, weights, _vectors(np.random.default_rng(6)), step=5)
    results.append((run.tables, run.slots))
  jax.tree.map(np.testing.assert_array_equal, *results)
  assert not np.array_equal(results[0][0]["deep"]["tags"], start)


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="lamb"), "name 'lamb' is not one of sgd, adagrad, rowwise_adagrad, adam, ftrl"),
    (dict(decay="linear"), "decay 'linear' is not one of constant, cosine, exponential"),
    (dict(learning_rate=-0.1), "learning_rate must be >= 0"),
    (dict(weight_decay=float("nan")), "weight_decay must be >= 0"),
    (dict(warmup_steps=-1), "warmup_steps must be >= 0"),
    (dict(beta2=1.0), r"beta2 must be in \[0, 1\)"),
    (dict(decay="cosine"), "decay_steps must be >= 1 with decay 'cosine'"),
    (dict(decay_steps=100), "decay_steps must be 0 with decay 'constant'"),
    (dict(decay="exponential", decay_steps=10), r"decay_rate must be in \(0, 1\]"),
    (dict(decay="cosine", decay_steps=10, decay_rate=0.5), "decay_rate must be 0 with decay 'cosine'"),
    (dict(name="ftrl", learning_rate=0.0), "learning_rate must be > 0 with name 'ftrl'"),
    (dict(name="ftrl", warmup_steps=10), "warmup_steps must be 0 with name 'ftrl'"),
    (dict(name="ftrl", decay="cosine", decay_steps=10), "decay must be constant or exponential"),
])
def test_bad_fields_are_errors_that_name_them(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SparseOptimizer(**kwargs)
  # The config layer prefixes the section, so a user reads optimizer.sparse: <field> ...
  with pytest.raises(ConfigError, match=f"optimizer.sparse: {message}"):
    config_lib.build(SparseOptimizer, kwargs, "optimizer.sparse")

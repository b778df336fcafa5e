"""Optimizers fused into the sparse backward: they see only the touched rows of a table.

`update_rows(rows, slots, grads, step)` receives the current values of the touched rows, their
optimizer slots (a dict of arrays with the same leading dimension) and the summed gradient of
each row, and returns the new rows and slots. The engine gathers and scatters them; nothing
here ever sees a whole table, so the cost of a step does not grow with the table. Where the
step does not depend on the row (`additive`: all but ftrl, without weight_decay),
`row_deltas(slots, grads, step)` returns the step alone, and the engine adds it in place
without reading the rows first.

A row is touched when its id occurs in the batch, whatever the id's weight: an in-range id
with weight 0 gives its row a zero gradient, which moves nothing under sgd and the adagrads
but still steps adam's moments, ftrl's closed form and `weight_decay`.

- sgd: w -= lr g.
- adagrad: a += g^2 (per element); rowwise_adagrad: a += mean(g^2) (one accumulator per row,
  as FBGEMM). Both: w -= lr g / sqrt(a + epsilon), optax.adagrad on the touched rows, with
  `initial_accumulator` as a's initial value.
- adam: lazy Adam (TF's LazyAdam, torch's SparseAdam). m = b1 m + (1-b1) g, v = b2 v + (1-b2)
  g^2, w -= lr m_hat / (sqrt(v_hat) + epsilon) with bias correction by the global step
  (t = step + 1), as optax.adam. Only touched rows' m and v move, so a row touched at every
  step follows optax.adam exactly, and a row not touched keeps its value, m and v bitwise (its
  moments do not decay while it is absent: the point of being lazy, as a step must not cost
  a sweep over the table).
- ftrl: FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction", Algorithm 1), as
  tf.keras.optimizers.Ftrl with learning_rate_power=-0.5: per element n += g^2,
  z += g - (sqrt(n) - sqrt(n_old)) / lr * w, then
  w = (sign(z) l1 - z) / ((beta + sqrt(n)) / lr + 2 l2) where |z| > l1, else exactly 0.
  `ftrl_l2` is the coefficient of l2 * w^2 in the loss, as TF's l2_regularization_strength
  (the paper's lambda_2 is twice it). n starts at `initial_accumulator` and z at 0. Rows stay
  exactly 0 while |z| <= l1, which is what makes FTRL's L1 give sparse tables.

`weight_decay` adds weight_decay * w to the gradient of each touched row before any of the
above (L2 regularisation coupled with the optimizer, as torch's `weight_decay`, not AdamW's
decoupled decay). Rows not in the batch are not decayed: regularisation is lazy too, so a
frequent id is pulled towards 0 more often than a rare one.

Every optimizer takes its rate from `learning_rate_at(step)`, where `step` is the train step
(0 for the first): a linear warmup from 0 over `warmup_steps`, then `decay` (constant, cosine
to 0 over `decay_steps`, or exponential by `decay_rate` every `decay_steps`).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

NAMES = ("sgd", "adagrad", "rowwise_adagrad", "adam", "ftrl")
DECAYS = ("constant", "cosine", "exponential")


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
  """The table optimizer of a config's `optimizer.sparse` (dense parameters use optax)."""
  name: str = "rowwise_adagrad"
  learning_rate: float = 0.05
  initial_accumulator: float = 0.1  # adagrads' accumulator and ftrl's n at the start
  # One field for both of its uses, each at its textbook place: adagrad's sits inside the
  # sqrt (optax.adagrad's eps), adam's is added to sqrt(v_hat) (optax.adam's eps). 1e-7 is
  # Keras' and TF LazyAdam's Adam default (optax's is 1e-8).
  epsilon: float = 1e-7
  beta1: float = 0.9                # adam
  beta2: float = 0.999              # adam
  ftrl_l1: float = 0.0              # ftrl: l1 * |w|
  ftrl_l2: float = 0.0              # ftrl: l2 * w^2 (TF's l2_regularization_strength)
  ftrl_beta: float = 0.0            # ftrl: the paper's beta in (beta + sqrt(n)) / lr
  weight_decay: float = 0.0         # every optimizer: g += weight_decay * w on touched rows
  warmup_steps: int = 0             # linear from 0 at step 0 to learning_rate at warmup_steps
  decay: str = "constant"           # after warmup: constant | cosine | exponential
  decay_steps: int = 0              # cosine: steps to reach 0; exponential: steps per decay_rate
  decay_rate: float = 0.0           # exponential only: the factor per decay_steps, in (0, 1]

  def __post_init__(self):
    for field, allowed in (("name", NAMES), ("decay", DECAYS)):
      if getattr(self, field) not in allowed:
        raise ValueError(f"{field} {getattr(self, field)!r} is not one of {', '.join(allowed)}")
    for field in ("learning_rate", "initial_accumulator", "epsilon", "ftrl_l1", "ftrl_l2",
                  "ftrl_beta", "weight_decay", "warmup_steps", "decay_steps"):
      if not getattr(self, field) >= 0:     # also rejects NaN
        raise ValueError(f"{field} must be >= 0, got {getattr(self, field)!r}")
    for field in ("beta1", "beta2"):
      if not 0 <= getattr(self, field) < 1:
        raise ValueError(f"{field} must be in [0, 1), got {getattr(self, field)!r}")
    if self.decay != "constant" and self.decay_steps < 1:
      raise ValueError(f"decay_steps must be >= 1 with decay {self.decay!r}, got {self.decay_steps}")
    if self.decay == "constant" and self.decay_steps:
      raise ValueError(f"decay_steps must be 0 with decay 'constant' (or set decay to cosine or "
                       f"exponential), got {self.decay_steps}")
    if self.decay == "exponential" and not 0 < self.decay_rate <= 1:
      raise ValueError(f"decay_rate must be in (0, 1] with decay 'exponential', "
                       f"got {self.decay_rate!r}")
    if self.decay != "exponential" and self.decay_rate:
      raise ValueError(f"decay_rate must be 0 with decay {self.decay!r} (it is for exponential), "
                       f"got {self.decay_rate!r}")
    # FTRL divides by the rate (in sigma and in the closed form), so it must never reach 0.
    if self.name == "ftrl":
      if not self.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0 with name 'ftrl', got {self.learning_rate!r}")
      if self.warmup_steps:
        raise ValueError("warmup_steps must be 0 with name 'ftrl': a warmup starts at rate 0, "
                         "which ftrl divides by")
      if self.decay == "cosine":
        raise ValueError("decay must be constant or exponential with name 'ftrl': cosine "
                         "reaches rate 0, which ftrl divides by")

  def learning_rate_at(self, step) -> float | jax.Array:
    """The rate of train step `step` (0 for the first): a Python float when constant, so that
    the default adds no op to the update; else a float32 scalar (jit-safe for a traced step)."""
    if not self.warmup_steps and self.decay == "constant":
      return self.learning_rate
    # Fractions multiply by a reciprocal rather than divide: under jit XLA rewrites a division
    # by a constant into that product, so writing it so keeps eager and jitted rates bitwise
    # equal, and an eager debugging run takes the very steps of the jitted one.
    step = jnp.asarray(step, jnp.float32)
    rate = jnp.float32(self.learning_rate)
    if self.warmup_steps:
      rate = rate * jnp.minimum(step * (1 / self.warmup_steps), 1.0)
    after = jnp.maximum(step - self.warmup_steps, 0.0) * (1 / max(self.decay_steps, 1))  # periods
    if self.decay == "cosine":
      rate = rate * 0.5 * (1.0 + jnp.cos(math.pi * jnp.minimum(after, 1.0)))
    elif self.decay == "exponential":
      rate = rate * jnp.float32(self.decay_rate) ** after
    return rate

  def init_slots(self, table: jax.Array) -> dict[str, jax.Array]:
    if self.name == "adagrad":
      return {"accumulator": jnp.full(table.shape, self.initial_accumulator, table.dtype)}
    if self.name == "rowwise_adagrad":
      return {"accumulator": jnp.full(table.shape[:1], self.initial_accumulator, table.dtype)}
    if self.name == "adam":
      return {"m": jnp.zeros_like(table), "v": jnp.zeros_like(table)}
    if self.name == "ftrl":
      return {"z": jnp.zeros_like(table),
              "n": jnp.full(table.shape, self.initial_accumulator, table.dtype)}
    return {}

  @property
  def additive(self) -> bool:
    """Whether a touched row's new value is row + delta with a delta that does not depend on
    the row (sgd, the adagrads and adam, without weight_decay): the engine then adds the
    delta in place (`row_deltas`) and never reads the rows. FTRL sets rows from its slots,
    and weight decay reads them."""
    return self.name != "ftrl" and not self.weight_decay

  def row_deltas(self, slots, grads, step):
    """(delta to add to each touched row, new slots) of an `additive` optimizer."""
    if not self.additive:
      raise ValueError(f"{self.name} with weight_decay {self.weight_decay} reads the rows: "
                       "use update_rows")
    return _DELTAS[self.name](self, slots, grads, self.learning_rate_at(step), step)

  def update_rows(self, rows, slots, grads, step):
    """New values of the touched rows and of their slots, from each row's summed gradient."""
    if self.weight_decay:
      grads = grads + self.weight_decay * rows
    lr = self.learning_rate_at(step)
    if self.name == "ftrl":
      return _ftrl(self, rows, slots, grads, lr, step)
    delta, slots = _DELTAS[self.name](self, slots, grads, lr, step)
    return rows + delta, slots


# Each returns -(the textbook step): IEEE subtraction is the addition of the negation, so
# row + delta is row - step (XLA may still fuse a product and the add into one FMA in one
# program and not in another: rounding, not arithmetic, can differ between programs).

def _sgd(opt, slots, grads, lr, step):
  return -(lr * grads), slots


def _adagrad(opt, slots, grads, lr, step):
  rowwise = opt.name == "rowwise_adagrad"
  squares = jnp.mean(grads * grads, -1) if rowwise else grads * grads
  accumulator = slots["accumulator"] + squares
  scale = jax.lax.rsqrt(accumulator + opt.epsilon)
  if rowwise:
    scale = scale[:, None]
  return -(lr * grads * scale), {"accumulator": accumulator}


def _adam(opt, slots, grads, lr, step):
  # Written in optax.adam's order of operations, so that the two agree to rounding.
  m = (1 - opt.beta1) * grads + opt.beta1 * slots["m"]
  v = (1 - opt.beta2) * (grads * grads) + opt.beta2 * slots["v"]
  t = jnp.asarray(step, jnp.float32) + 1
  m_hat = m / (1 - opt.beta1 ** t)
  v_hat = v / (1 - opt.beta2 ** t)
  return -(lr * (m_hat / (jnp.sqrt(v_hat) + opt.epsilon))), {"m": m, "v": v}


def _ftrl(opt, rows, slots, grads, lr, step):
  n = slots["n"] + grads * grads
  sigma = (jnp.sqrt(n) - jnp.sqrt(slots["n"])) / lr
  z = slots["z"] + grads - sigma * rows
  active = jnp.abs(z) > opt.ftrl_l1
  quadratic = (opt.ftrl_beta + jnp.sqrt(n)) / lr + 2 * opt.ftrl_l2
  # Inactive elements may have a zero denominator (n = 0: the engine's padding lanes, or a
  # zero initial_accumulator); dividing by 1 there keeps NaN out of the discarded branch.
  w = (jnp.sign(z) * opt.ftrl_l1 - z) / jnp.where(active, quadratic, 1)
  return jnp.where(active, w, 0).astype(rows.dtype), {"z": z, "n": n}


_DELTAS = {"sgd": _sgd, "adagrad": _adagrad, "rowwise_adagrad": _adagrad, "adam": _adam}

"""Optimizers fused into the sparse backward: they see only the touched rows of a table.

`update_rows(rows, slots, grads, step)` receives the current values of the touched rows, their
optimizer slots (a dict of arrays with the same leading dimension) and the summed gradient of
each row, and returns the new rows and slots. The engine gathers and scatters them; nothing
here ever sees a whole table, so the cost of a step does not grow with the table.

sgd: w -= lr g.  adagrad: a += g^2 (per element).  rowwise_adagrad: a += mean(g^2) (one
accumulator per row, as FBGEMM). Both adagrads: w -= lr g / sqrt(a + epsilon), matching
optax.adagrad on the touched rows, with `initial_accumulator` as its initial value.
"""

import dataclasses

import jax
import jax.numpy as jnp

NAMES = ("sgd", "adagrad", "rowwise_adagrad")


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
  """The table optimizer of a config's `optimizer.sparse` (dense parameters use optax)."""
  name: str = "rowwise_adagrad"
  learning_rate: float = 0.05
  initial_accumulator: float = 0.1
  epsilon: float = 1e-7

  def __post_init__(self):
    if self.name not in NAMES:
      raise ValueError(f"name {self.name!r} is not one of {', '.join(NAMES)}")

  def init_slots(self, table: jax.Array) -> dict[str, jax.Array]:
    if self.name == "adagrad":
      return {"accumulator": jnp.full(table.shape, self.initial_accumulator, table.dtype)}
    if self.name == "rowwise_adagrad":
      return {"accumulator": jnp.full(table.shape[:1], self.initial_accumulator, table.dtype)}
    return {}

  def update_rows(self, rows, slots, grads, step):
    """New values of the touched rows and of their slots, from each row's summed gradient."""
    del step   # constant learning rates so far
    if self.name == "sgd":
      return rows - self.learning_rate * grads, slots
    squares = grads * grads if self.name == "adagrad" else jnp.mean(grads * grads, -1)
    accumulator = slots["accumulator"] + squares
    scale = jax.lax.rsqrt(accumulator + self.epsilon)
    if self.name == "rowwise_adagrad":
      scale = scale[:, None]
    return rows - self.learning_rate * grads * scale, {"accumulator": accumulator}

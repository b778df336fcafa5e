"""Dense-parameter optimizers from config (optax). Tables use `sparse_optim.SparseOptimizer`."""

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class DenseOptimizer:
  name: str = "adam"                # adam | adamw | adagrad | sgd
  learning_rate: float = 1e-3
  weight_decay: float = 0.0         # adamw only
  warmup_steps: int = 0
  decay_steps: int = 0              # cosine decay to 0 over this many steps after warmup; 0: constant
  clip_norm: float = 0.0            # 0: no clipping

  def __post_init__(self):
    if self.name not in _OPTIMIZERS:
      raise ValueError(f"name {self.name!r} is not one of {', '.join(_OPTIMIZERS)}")
    if not self.learning_rate > 0:
      raise ValueError(f"learning_rate {self.learning_rate} is not positive")
    for name in ("weight_decay", "warmup_steps", "decay_steps", "clip_norm"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} {getattr(self, name)} is negative")

  def schedule(self) -> optax.Schedule:
    if self.decay_steps:
      return optax.warmup_cosine_decay_schedule(
          0.0, self.learning_rate, self.warmup_steps, self.warmup_steps + self.decay_steps)
    if self.warmup_steps:
      return optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps)
    return optax.constant_schedule(self.learning_rate)

  def build(self) -> optax.GradientTransformation:
    tx = _OPTIMIZERS[self.name](self)
    if self.clip_norm:
      tx = optax.chain(optax.clip_by_global_norm(self.clip_norm), tx)
    return tx


_OPTIMIZERS = {
    "adam": lambda o: optax.adam(o.schedule()),
    "adamw": lambda o: optax.adamw(o.schedule(), weight_decay=o.weight_decay),
    "adagrad": lambda o: optax.adagrad(o.schedule()),
    "sgd": lambda o: optax.sgd(o.schedule()),
}

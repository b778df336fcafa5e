"""The device mesh, the logical axis rules and the shardings of state and batch.

One vocabulary for every module: logical axis names map to mesh axes in `RULES`, the only
table of its kind. This first version shards the batch over every device ("data parallel")
and replicates the state; the sharded embedding engine adds the `rows` axis over `model`.
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

# logical axis name -> mesh axis (None: replicated)
RULES = {
    "batch": "data",
    "rows": None,
    "embed": None,
    "mlp": None,
}


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all), axis "data", with Auto axis types."""
  devices = list(devices or jax.devices())
  return jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)


def logical(mesh: Mesh, *names) -> NamedSharding:
  return NamedSharding(mesh, P(*(RULES[n] if n else None for n in names)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return logical(mesh, "batch")


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """This process's numpy rows -> global jax arrays sharded over the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}

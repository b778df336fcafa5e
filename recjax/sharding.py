"""The device mesh, the logical axis rules and the shardings of state and batch.

One vocabulary for every module: logical axis names map to mesh axes in `RULES`, the only
table of its kind, and the mesh's axis names are `DATA` and `MODEL`, spelt nowhere else
(collectives inside `shard_map` name them). The mesh is (data, model): the batch is split
over every device, dense parameters are replicated, and sharded embedding tables split their
rows over `model` (replicated over `data`).
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA, MODEL = "data", "model"     # the mesh's axes, in order

# logical axis name -> mesh axes. Only names something reads: dense parameters and a table's
# embedding dimension are replicated, so they need no entry (`None` in a spec).
RULES = {
    "batch": (DATA, MODEL),         # a batch's rows: split over every device
    "rows": MODEL,                  # a sharded table's rows (and its slots' rows)
}


def make_mesh(devices=None, model: int = 0) -> Mesh:
  """A (data, model) mesh over `devices` (default: all); `model` devices (default: all) share
  each sharded table's rows. Auto axis types (see DESIGN.md's JAX notes)."""
  devices = list(devices or jax.devices())
  model = model or len(devices)
  if len(devices) % model:
    raise ValueError(f"{len(devices)} devices do not split into model groups of {model}")
  return jax.make_mesh((len(devices) // model, model), (DATA, MODEL),
                       axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def spec(*names) -> P:
  """The PartitionSpec of logical axis `names` (None: a replicated dimension), for
  `shard_map`'s in and out specs as for `logical`."""
  return P(*(RULES[n] if n else None for n in names))


def logical(mesh: Mesh, *names) -> NamedSharding:
  return NamedSharding(mesh, spec(*names))


def row_shards(mesh: Mesh) -> int:
  """How many shards a row-sharded table's rows split into on `mesh`."""
  return mesh.shape[RULES["rows"]]


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return logical(mesh, "batch")


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """This process's numpy rows -> global jax arrays sharded over the batch axis."""
  return jax.tree.map(
      lambda v: jax.make_array_from_process_local_data(sharding, np.asarray(v)), batch)

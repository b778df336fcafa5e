"""Restores a workdir's last checkpoint onto this process's devices and saves its whole train
state (params, optimizer state, tables, slots) to an .npz file; run by tests with various
device counts.

  python tests/dump_state.py CONFIG WORKDIR OUT.npz [--config.a.b=v ...]
"""

import sys

import jax
import numpy as np

from recjax import config as config_lib
from recjax import sharding
from recjax import train

config_path, workdir, out, *overrides = sys.argv[1:]
config = config_lib.load(config_path)
for item in overrides:
  config_lib.override(config, item.removeprefix("--config."))
experiment = config_lib.experiment(config)
mesh = sharding.make_mesh()
state = train.restore_state(experiment, workdir, mesh)
arrays = {}
sharded = {"tables": state.tables, "slots": state.slots}
for path, leaf in jax.tree_util.tree_leaves_with_path(sharded):
  if mesh.size > 1 and leaf.ndim:   # the restored shards sit on this mesh's devices, over `model`
    assert leaf.sharding.spec[0] == "model" and len(leaf.sharding.device_set) == mesh.size, path
for path, leaf in jax.tree_util.tree_leaves_with_path(state):
  arrays[jax.tree_util.keystr(path)] = np.asarray(leaf)
np.savez(out, **arrays)
print(f"restored step {int(state.step)} onto {mesh.size} device(s): {len(arrays)} arrays")

"""Restores a workdir's last checkpoint onto this process's devices and returns (or, as a
script, saves to an .npz file) its whole train state: params, optimizer state, tables,
slots. Tests run the script with various device counts, or call `state_arrays` in-process.

  python tests/dump_state.py CONFIG WORKDIR OUT.npz [--config.a.b=v ...]
"""

import sys

import jax
import numpy as np

from recjax import config as config_lib
from recjax import sharding
from recjax.train import loop as train


def state_arrays(config_path: str, workdir, overrides=()) -> tuple[int, dict[str, np.ndarray]]:
  """The step of `workdir`'s last checkpoint and its state as numpy arrays by tree path."""
  config = config_lib.load(config_path)
  for item in overrides:
    config_lib.override(config, item.removeprefix("--config."))
  experiment = config_lib.experiment(config)
  mesh = sharding.make_mesh()
  state = train.restore_state(experiment, workdir, mesh)
  sharded = {"tables": state.tables, "slots": state.slots}
  for path, leaf in jax.tree_util.tree_leaves_with_path(sharded):
    if mesh.size > 1 and leaf.ndim:   # the restored shards sit on this mesh's devices, over `model`
      assert leaf.sharding.spec[0] == "model" and len(leaf.sharding.device_set) == mesh.size, path
  arrays = {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_leaves_with_path(state)}
  return int(state.step), arrays


if __name__ == "__main__":
  config_path, workdir, out, *overrides = sys.argv[1:]
  step, arrays = state_arrays(config_path, workdir, overrides)
  np.savez(out, **arrays)
  print(f"restored step {step} onto {jax.device_count()} device(s): {len(arrays)} arrays")

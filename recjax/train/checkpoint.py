"""Orbax checkpoints of the train state together with the input iterator's position.

The iterator's position (`get_state()`, a batch index: see `input.train_iterator`) is the same
in every process, so it is saved once as JSON rather than once per process: a checkpoint
then restores onto any number of processes, as the state restores onto any mesh.

Saves are synchronous and atomic (Orbax writes a temporary directory and renames it), so a
crash or a kill never leaves a half-written checkpoint that a restart would read; leftover
temporaries are cleaned up on the next start.
"""

import pathlib

import orbax.checkpoint as ocp

from recjax.errors import RecjaxError


class Checkpointer:
  """One Orbax manager over `<workdir>/<name>` with items `state` and `data` (`checkpoints`:
  the run's own; `best_checkpoint`: the state of the best evaluation, exported as its own
  version)."""

  def __init__(self, workdir, keep: int | None = 2, name: str = "checkpoints"):
    self.directory = pathlib.Path(workdir).absolute() / name
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True),
        item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def delete(self, step: int) -> None:
    self.manager.delete(step)

  def save(self, step: int, state, data_iterator=None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = ocp.args.JsonSave(data_iterator.get_state())
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def restore(self, abstract_state, data_iterator=None, step: int | None = None):
    """Restores onto `abstract_state`'s shapes and shardings (another mesh is fine)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise RecjaxError(f"{self.directory}: no checkpoint to restore; run `recjax train` first")
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = ocp.args.JsonRestore()
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise RecjaxError(
          f"{self.directory}/{step}: the checkpoint does not fit this config's model and "
          f"tables (was it written by another experiment?): {str(e)[:500]}") from None
    if data_iterator is not None:
      data_iterator.set_state(restored["data"])
    return restored["state"]

  def close(self) -> None:
    self.manager.close()

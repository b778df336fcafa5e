"""Orbax checkpoints of the train state together with the input iterator's position.

The iterator's position (`get_state()`, a batch index: see `input.train_iterator`) is the same
in every process, so it is saved once as JSON rather than once per process: a checkpoint
then restores onto any number of processes, as the state restores onto any mesh.

Saves are synchronous and atomic (Orbax writes a temporary directory and renames it), so a
crash or a kill never leaves a half-written checkpoint that a restart would read; leftover
temporaries are cleaned up on the next start.

Each checkpoint also holds `meta`: the config's fingerprint and the arrays' checksums
(`fingerprint`), and `recjax_files.json`: the CRC32 of every file as written (read back once
at save; a restore checks the files before Orbax decodes them). A restore refuses a
checkpoint of a changed config, naming the keys that changed, and treats one whose files or
arrays do not match their checksums as damaged: the newest undamaged checkpoint is used
instead (`skipped` names the damaged steps), and if there is none the error names them.
"""

import json
import pathlib
import zlib

import jax
import orbax.checkpoint as ocp

from recjax.errors import RecjaxError
from recjax import fingerprint as fingerprint_lib


FILES = "recjax_files.json"


def _crc(path) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(1 << 22):
      crc = zlib.crc32(chunk, crc)
  return crc


class DamagedCheckpoint(RecjaxError):
  """A checkpoint whose files or arrays do not match the checksums saved with them."""


class Checkpointer:
  """One Orbax manager over `<workdir>/<name>` with items `state` and `data` (`checkpoints`:
  the run's own; `best_checkpoint`: the state of the best evaluation, exported as its own
  version)."""

  def __init__(self, workdir, keep: int | None = 2, name: str = "checkpoints",
               fingerprint: dict | None = None):
    self.directory = pathlib.Path(workdir).absolute() / name
    self.fingerprint = fingerprint       # None: not checked (a warm start reads another run)
    self.skipped = []                    # damaged steps a restore passed over
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True),
        item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def delete(self, step: int) -> None:
    self.manager.delete(step)

  def save(self, step: int, state, data_iterator=None) -> None:
    items = {"state": ocp.args.StandardSave(state),
             "meta": ocp.args.JsonSave({"fingerprint": self.fingerprint,
                                        "checksums": fingerprint_lib.checksums(state)})}
    if data_iterator is not None:
      items["data"] = ocp.args.JsonSave(data_iterator.get_state())
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    self._record_files(step)

  def _record_files(self, step: int) -> None:
    """CRC32 of every file of the step as written, in `FILES` beside them (written under a
    temporary name and renamed), so a restore finds a damaged file before decoding it."""
    directory = self.directory / str(step)
    if jax.process_index() != 0 or not directory.is_dir():
      return                               # one process writes it (the save was collective)
    sums = {str(p.relative_to(directory)): _crc(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != FILES}
    tmp = directory / f".{FILES}.tmp"
    tmp.write_text(json.dumps(sums))
    tmp.replace(directory / FILES)

  def _check_files(self, step: int) -> None:
    path = self.directory / str(step) / FILES
    if not path.exists():
      return                               # written before files were recorded
    try:
      sums = json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise DamagedCheckpoint(f"step {step}: {FILES} is unreadable: {e}") from None
    for name, crc in sums.items():
      file = self.directory / str(step) / name
      if not file.exists() or _crc(file) != crc:
        what = "missing" if not file.exists() else "changed since it was written"
        raise DamagedCheckpoint(f"step {step}: {name} is {what}")

  def restore(self, abstract_state, data_iterator=None, step: int | None = None):
    """Restores onto `abstract_state`'s shapes and shardings (another mesh is fine): `step`,
    else the newest undamaged checkpoint."""
    if step is not None:
      return self._restore(step, abstract_state, data_iterator)
    steps = self.steps()
    if not steps:
      raise RecjaxError(f"{self.directory}: no checkpoint to restore; run `recjax train` first")
    for candidate in reversed(steps):
      try:
        return self._restore(candidate, abstract_state, data_iterator)
      except DamagedCheckpoint as e:
        self.skipped.append(candidate)
        last = e
    raise RecjaxError(f"{self.directory}: every checkpoint is damaged ({last})")

  def _restore(self, step: int, abstract_state, data_iterator):
    self._check_files(step)
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = ocp.args.JsonRestore()
    meta = self._meta(step)
    same_config = False                # the config matches: a failed read is damage
    if meta and self.fingerprint is not None and meta.get("fingerprint") is not None:
      changed = fingerprint_lib.changes(meta["fingerprint"], self.fingerprint)
      same_config = not changed
      if changed:
        raise RecjaxError(
            f"{self.directory}/{step}: the checkpoint was written under another config: "
            f"{'; '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} (start a new "
            "workdir, or warm-start one from this run with --init_from)")
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      if same_config:
        raise DamagedCheckpoint(f"step {step}: unreadable: {str(e)[:300]}") from None
      raise RecjaxError(
          f"{self.directory}/{step}: the checkpoint does not fit this config's model and "
          f"tables (was it written by another experiment?): {str(e)[:500]}") from None
    except OSError as e:              # a file too damaged to decode
      raise DamagedCheckpoint(f"step {step}: {type(e).__name__}: {str(e)[:300]}") from None
    if meta and meta.get("checksums"):
      bad = fingerprint_lib.damaged(meta["checksums"], restored["state"])
      if bad:
        raise DamagedCheckpoint(f"step {step}: arrays {', '.join(bad[:3])} do not match "
                                "their checksums")
    if data_iterator is not None:
      data_iterator.set_state(restored["data"])
    return restored["state"]

  def _meta(self, step: int) -> dict | None:
    """The checkpoint's meta item (None for a checkpoint written before it existed)."""
    path = self.directory / str(step) / "meta" / "metadata"
    if not path.exists():
      return None
    try:
      return json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise DamagedCheckpoint(f"step {step}: its meta file is unreadable: {e}") from None

  def close(self) -> None:
    self.manager.close()

"""The model versions a server holds: the newest under a TF-Serving base path, swapped live.

TF-Serving's default version policy serves the latest version and loads a newer one beside
it before unloading the old. Here the same: `Versions.poll` looks for a version newer than
the one served, loads it as TF-Serving does (`session_model`: a Session over the
MetaGraph) and warms it up (the first call at a batch size compiles the dense tower, which
must not happen on a user's request), then swaps one reference. A
request takes that reference once, at its start, so a request in flight finishes on the
version it started on; the old model is freed when its last request drops it.
"""

import dataclasses
import os
import pathlib
import sys
import threading

import numpy as np
import tensorflow as tf

from recjax.export import ranking
from recjax.export import tf_tables
from recjax.export import writes
from recjax.serve import defaults
from recjax.serve import session_model


@dataclasses.dataclass(frozen=True)
class Loaded:
  """One loaded version: its signatures by name (`session_model.Signature`), their specs."""
  version: int
  path: str
  session: object                       # the tf.compat.v1.Session holding the version
  signatures: dict

  def inputs(self, signature: str) -> dict[str, tf.TensorSpec]:
    return self.signatures[signature].inputs

  def outputs(self, signature: str) -> dict[str, tf.TensorSpec]:
    return self.signatures[signature].outputs


def warm_inputs(specs: dict[str, tf.TensorSpec], rows: int, values: dict) -> dict:
  """A request of `rows` rows of `values` (valid raw values per column: the serving
  defaults) for a signature's inputs; 0.0 or "0" for a column `values` lacks."""
  return {name: np.full([rows], values.get(name, 0.0), np.float32) if spec.dtype == tf.float32
          else [values.get(name, "0")] * rows for name, spec in specs.items()}


def load(base, version: int, one_row: set[str], values: dict, sizes: dict) -> Loaded:
  """Loads version `version` under `base` (`session_model`) and calls each signature at the
  row counts `sizes[signature]` gives (default: every batch bucket up to `sizes[None]`), so
  no request pays a compile (the dense tower compiles once per `tf_tables.BUCKETS` size);
  `rank` with one row of its `one_row` columns."""
  path = pathlib.Path(base) / str(version)
  session, signatures = session_model.load(path)
  loaded = Loaded(version, str(path), session, signatures)
  every = [b for b in tf_tables.BUCKETS if b < sizes[None]] + [sizes[None]]
  for name, function in loaded.signatures.items():
    for rows in sorted(sizes.get(name, every)):
      inputs = warm_inputs(loaded.inputs(name), rows, values)
      if name == ranking.SIGNATURE:
        inputs = {c: v[:1] if c in one_row else v for c, v in inputs.items()}
      try:
        function(**inputs)
      except tf.errors.InvalidArgumentError:
        pass    # a value a transform rejects: the tower was not reached at this size
  return loaded


# Loading a SavedModel is mostly Python (deserialising, re-tracing functions) holding the
# GIL; the request thread waits up to one switch interval (5 ms by default) each time it
# wants the GIL back, several times a request. While a version loads the interval is cut
# to this, so a swap costs requests little (benchmarks/serving.py's swap_p99_ratio).
LOADING_SWITCH_S = 0.0002


def _yield_to_requests() -> None:
  """Lowers this thread's CPU priority (Linux: a thread has its own nice value), so a
  version loading in the background gives way to requests on a busy machine."""
  try:
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
  except (AttributeError, OSError):       # not Linux: the load shares the CPU evenly
    pass


class Versions:
  """The served version of the model at `base`: `current` (a `Loaded` or None), `poll` to
  load and swap in a newer one, `start` to poll every `every` seconds in a daemon thread."""

  def __init__(self, base, name: str, one_row=frozenset(), values=None, max_rows: int = 1):
    self.base = pathlib.Path(base)
    self.name = name
    self.one_row = set(one_row)         # the rank signature's one-row inputs
    self.values = dict(values or {})    # valid raw values to warm up with
    self.max_rows = max_rows
    self.served: dict[str, set[int]] = {}     # signature -> buckets requests have used
    self.current: Loaded | None = None
    self.loads = 0
    self.errors: list[str] = []
    self._stop = threading.Event()

  def poll(self) -> bool:
    """Loads and swaps in the newest version if it is newer than the served one."""
    available = writes.versions(self.base)
    if not available or (self.current and available[-1] <= self.current.version):
      return False
    switch = sys.getswitchinterval()
    sys.setswitchinterval(LOADING_SWITCH_S)
    try:
      # a first version warms every bucket; a newer one those requests used (as
      # TF-Serving's recorded warm-up requests do): a swap then compiles little
      sizes = {None: self.max_rows} | {k: set(v) for k, v in self.served.items()}
      loaded = load(self.base, available[-1], self.one_row, self.values, sizes)
    except Exception as e:          # a damaged version is reported and the old one kept
      self.errors.append(f"version {available[-1]}: {type(e).__name__}: {e}")
      return False
    finally:
      sys.setswitchinterval(switch)
    self.current = loaded          # the swap: one reference, atomic for readers
    self.loads += 1
    return True

  def record(self, signature: str, rows: int) -> None:
    """Notes that a request called `signature` with `rows` rows (its bucket is warmed up
    in the next version before it serves)."""
    bucket = next(b for b in tf_tables.BUCKETS if b >= rows)
    self.served.setdefault(signature, set()).add(min(bucket, self.max_rows))

  def start(self, every: float) -> None:
    def run():
      _yield_to_requests()
      while not self._stop.wait(every):
        self.poll()
    threading.Thread(target=run, name=f"versions-{self.name}", daemon=True).start()

  def stop(self) -> None:
    self._stop.set()

  def status(self) -> list[dict]:
    """TF-Serving's `model_version_status` list."""
    if self.current is None:
      return []
    return [{"version": str(self.current.version), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}]



def of(experiment, base) -> Versions:
  """The `Versions` of an experiment's model at `base`, warmed up with its serving defaults
  at every bucket up to `serving.max_candidates` rows."""
  item = experiment.serving.item
  one_row = ranking.sides(experiment)[0] if item and item.columns else set()
  return Versions(base, experiment.export.model_name, one_row,
                  defaults.of(experiment), experiment.serving.max_candidates)

"""`recjax replay verify`: every logged score, re-scored twice, must match.

Per model version in the log: the SavedModel of that version (`export/<model>/<version>`)
scores the logged raw rows through `serving_default` (full rows, not the rank signature that
served them: a second path), and JAX scores them through the training input pipeline (the
checkpoint of that step, the rows written to Parquet and read as `recjax predict` reads a
file). Both must be within `tolerance` of the logged score; the rows that are not are named
by event id. A version whose export or checkpoint is gone is an error naming it (raise
`export.keep` / `checkpoint` keep to verify older traffic).
"""

import dataclasses
import pathlib
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recjax.errors import DataError
from recjax.export import saved_model
from recjax.export import writes
from recjax.replay import writer

CHUNK = 8192


def read_log(replay_dir) -> pa.Table:
  files = writer.parts(replay_dir)
  if not files:
    raise DataError(f"{replay_dir}: no replay parts (part-*.parquet)")
  return pa.concat_tables(pq.read_table(p) for p in files)


def _score_name(outputs) -> str:
  """The output the ranker ranks by (`RankService.ranking_scores`)."""
  return saved_model.OUTPUT if saved_model.OUTPUT in outputs else sorted(outputs)[0]


def saved_model_scores(path, rows: pa.Table, specs) -> np.ndarray:
  import tensorflow as tf
  function = tf.saved_model.load(str(path)).signatures[saved_model.SIGNATURE]
  out = []
  for start in range(0, rows.num_rows, CHUNK):
    chunk = rows.slice(start, CHUNK)
    feed = {c: tf.constant(chunk[c].to_numpy(zero_copy_only=False), s.dtype)
            for c, s in specs.items()}
    outputs = function(**feed)
    out.append(outputs[_score_name(outputs)].numpy().reshape(chunk.num_rows, -1)[:, 0])
  return np.concatenate(out)


def jax_scores(experiment, workdir, step: int, rows: pa.Table, specs) -> np.ndarray:
  from recjax import sharding
  from recjax.input import pipeline as input_lib
  from recjax.train import checkpoint
  from recjax.train import loop as train
  mesh = sharding.make_mesh()
  checkpointer = checkpoint.Checkpointer(workdir)   # values judged, not configs: no fingerprint
  try:
    if step not in checkpointer.steps():
      raise DataError(f"{workdir}: no checkpoint of step {step} (the logged model version); "
                      f"it holds {checkpointer.steps()}")
    state = checkpointer.restore(train.state_target(experiment, mesh), step=step)
  finally:
    checkpointer.close()
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "rows.parquet"
    pq.write_table(rows.select(sorted(specs)), path)
    data = dataclasses.replace(experiment.data, format="parquet", eval=(str(path),),
                               synthetic=None, columns=())
    split = input_lib.load_split(dataclasses.replace(experiment, data=data), "eval",
                                 with_labels=False)
    predictions = train.predict(experiment, state, split, mesh)
  names = saved_model.output_names(experiment)            # {task: output name}
  task = next(t for t, n in names.items() if n == _score_name(set(names.values())))
  return np.asarray(predictions[task]).reshape(rows.num_rows, -1)[:, 0]


def verify(experiment, workdir, replay_dir, tolerance: float = 1e-5, named: int = 20) -> dict:
  """{rows, versions, max_abs_diff (each path), events over the tolerance}; DataError
  when a row is over it, naming up to `named` event ids."""
  log = read_log(replay_dir)
  specs = saved_model.serving_inputs(experiment)
  base = writes.base_path(experiment, workdir)
  logged = log["score"].to_numpy()
  diff = {"saved_model": np.zeros(log.num_rows), "jax": np.zeros(log.num_rows)}
  versions = sorted(set(log["model_version"].to_pylist()))
  for version in versions:
    where = pc.equal(log["model_version"], version)
    index = np.flatnonzero(where.to_numpy(zero_copy_only=False))
    rows = log.filter(where)
    path = base / str(version)
    if not (path / "saved_model.pb").exists():
      raise DataError(f"{path}: the SavedModel of logged version {version} is gone "
                      "(export.keep pruned it?)")
    diff["saved_model"][index] = np.abs(saved_model_scores(path, rows, specs) - logged[index])
    diff["jax"][index] = np.abs(jax_scores(experiment, workdir, version, rows, specs)
                                - logged[index])
  worst = np.maximum(diff["saved_model"], diff["jax"])
  bad = np.flatnonzero(worst > tolerance)
  events = list(dict.fromkeys(log["event_id"].take(pa.array(bad)).to_pylist()))
  summary = {"rows": log.num_rows, "versions": versions,
             "max_abs_diff": float(worst.max(initial=0.0)),
             "max_abs_diff_saved_model": float(diff["saved_model"].max(initial=0.0)),
             "max_abs_diff_jax": float(diff["jax"].max(initial=0.0)),
             "rows_over_tolerance": int(len(bad)), "events_over_tolerance": len(events)}
  if len(bad):
    raise DataError(f"replay verify: {len(bad)} rows of {len(events)} events differ from "
                    f"their logged score by more than {tolerance} (largest "
                    f"{summary['max_abs_diff']:.3g}); events: {', '.join(events[:named])}"
                    + (" ..." if len(events) > named else ""))
  return summary

"""The training loop: `train_and_evaluate(experiment, workdir)` and its pure step functions.

Order as big_vision: mesh, input, shapes, shardings, restore-or-init, step, loop, export;
what the loop keeps between steps (losses, overflow counts, NaN checks, timing) and between
evaluations is `bookkeeping`'s, which exports a run writes is `export.writes`'. The step
differentiates the loss with respect to dense parameters and to the pooled embeddings; optax
updates the former, `embedding.apply_gradients` the touched table rows. The state is donated.

The lifecycle around the loop: a run resumes from its own last checkpoint, or warm-starts
from another workdir's (`init_from`: yesterday's model, step 0, new ids counted per table);
a NaN or infinite loss stops it before any later state is saved; evaluations every
`eval_every` steps feed early stopping, and the best evaluation's state is kept in
`best_checkpoint/` and exported as its own version beside the final one (`export.writes`).
"""

import dataclasses
import pathlib
import sys
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
import tqdm

from recjax import jsonio
from recjax.train import bookkeeping
from recjax.train import checkpoint
from recjax import fingerprint
from recjax.embedding import tables as embedding
from recjax.features import spec as features_lib
from recjax.embedding import hugepages
from recjax.input import pipeline as input_lib
from recjax.tasks import retrieval
from recjax.train import seen_ids
from recjax import sharding
from recjax.tasks import spec as tasks_lib
from recjax.errors import RecjaxError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  tables: Any
  slots: Any


def _dummy_batch(experiment, batch_size: int) -> dict:
  ids = {f.name: jnp.zeros((batch_size, f.length), jnp.int32)
         for f in features_lib.id_features(experiment.features)}
  n_dense = features_lib.dense_width(experiment.features)
  return {"ids": ids, "weights": jax.tree.map(lambda x: jnp.ones(x.shape, jnp.float32), ids),
          "dense": jnp.zeros((batch_size, n_dense), jnp.float32)}


def forward(experiment, params, tables, batch, mesh=None) -> dict:
  """The model's outputs (logits per task, ...): table lookup, then the model's pure apply."""
  plans = experiment.embedding_plan.groups
  embedded = embedding.lookup(tables, plans, batch["ids"], batch["weights"], mesh)
  return experiment.model.apply({"params": params}, embedded, batch["dense"])


def init_state(experiment, rng) -> TrainState:
  specs, plans = experiment.embedding_plan
  table_rng, model_rng = jax.random.split(rng)
  tables = embedding.init(specs, table_rng)
  batch = _dummy_batch(experiment, 2)
  embedded = embedding.lookup(tables, plans, batch["ids"], batch["weights"])
  params = experiment.model.init(model_rng, embedded, batch["dense"])["params"]
  tasks_lib.check_outputs(experiment.tasks, jax.eval_shape(
      lambda: experiment.model.apply({"params": params}, embedded, batch["dense"])))
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      opt_state=experiment.dense_optimizer.build().init(params),
      tables=tables, slots=embedding.init_slots(tables, experiment.sparse_optimizer))


def make_train_step(experiment, mesh=None):
  """The pure step (state, batch) -> (state, metrics); with `mesh`, sharded tables go
  through all_to_all."""
  plans = experiment.embedding_plan.groups
  tx = experiment.dense_optimizer.build()

  def train_step(state: TrainState, batch: dict):
    embedded = embedding.lookup(state.tables, plans, batch["ids"], batch["weights"], mesh)

    def loss_fn(params, embedded):
      outputs = experiment.model.apply({"params": params}, embedded, batch["dense"])
      return tasks_lib.total_loss(experiment.tasks, outputs, batch)

    (loss, task_losses), (param_grads, embedding_grads) = jax.value_and_grad(
        loss_fn, argnums=(0, 1), has_aux=True)(state.params, embedded)
    updates, opt_state = tx.update(param_grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    tables, slots = embedding.apply_gradients(
        state.tables, state.slots, plans, batch["ids"], batch["weights"], embedding_grads,
        experiment.sparse_optimizer, state.step, mesh)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                           tables=tables, slots=slots)
    metrics = {"loss": loss}
    if len(experiment.tasks) > 1:
      metrics["task_loss"] = task_losses
    if mesh is not None:
      metrics["embedding_overflow"] = embedding.overflow(state.tables, plans, batch["ids"], mesh)
    return new_state, metrics

  return train_step


def make_predict_step(experiment, mesh=None):
  """(state, batch) -> {task: served prediction [B]} (probabilities for binary tasks)."""
  def predict_step(state: TrainState, batch: dict):
    outputs = forward(experiment, state.params, state.tables, batch, mesh)
    return tasks_lib.predictions(experiment.tasks, outputs)
  return predict_step


def _local_share(batch: dict) -> dict:
  """This process's slice of a global batch that every process holds whole."""
  size = len(batch["mask"]) // jax.process_count()
  start = jax.process_index() * size
  return jax.tree.map(lambda v: v[start:start + size], batch)


_LABEL_KEYS = ("labels", "label_masks", "loss_weights")


def predict(experiment, state, split, mesh) -> dict[str, np.ndarray]:
  """{task: prediction} for every row of `split`, in order (every process reads every row,
  feeds its share of each batch and receives all the predictions)."""
  batch_size = experiment.train.eval_batch_size
  step = jax.jit(make_predict_step(experiment, mesh), out_shardings=sharding.replicated(mesh))
  inputs = {k: v for k, v in split.arrays.items() if k not in _LABEL_KEYS}
  out = []
  for batch in input_lib.eval_batches(dataclasses.replace(split, arrays=inputs), batch_size):
    mask = batch["mask"]
    local = _local_share(batch)
    local.pop("mask")
    predictions = step(state, sharding.to_global(local, sharding.batch_sharding(mesh)))
    out.append(jax.tree.map(lambda p: np.asarray(p)[mask > 0], predictions))
  return jax.tree.map(lambda *parts: np.concatenate(parts), *out)


def evaluate(experiment, state, split, mesh) -> dict:
  """Every task's metrics over the rows that have its label (retrieval tasks: over a corpus)."""
  return tasks_lib.evaluate(experiment.tasks, split.arrays["labels"],
                            split.arrays["label_masks"], predict(experiment, state, split, mesh),
                            split.groups) | retrieval.evaluate_tasks(experiment, state)


def state_shardings(experiment, mesh, shapes):
  """Replicated dense state; tables and their slots per their placement."""
  specs = experiment.embedding_plan.specs
  replicated = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  return replicated.replace(tables=embedding.shardings(specs, shapes.tables, mesh),
                            slots=embedding.shardings(specs, shapes.slots, mesh))


def state_target(experiment, mesh):
  """Shapes with target shardings of the train state, for init and restore."""
  shapes = jax.eval_shape(lambda: init_state(experiment, jax.random.key(0)))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, state_shardings(experiment, mesh, shapes))


def restore_state(experiment, workdir, mesh) -> TrainState:
  """The newest undamaged checkpoint's state, refused if it was written under another
  config (`fingerprint`); a damaged newer one is named on stderr."""
  checkpointer = checkpoint.Checkpointer(workdir, fingerprint=fingerprint.of(experiment))
  try:
    state = checkpointer.restore(state_target(experiment, mesh))
    _report_skipped(checkpointer)
    return state
  finally:
    checkpointer.close()


def _report_skipped(checkpointer) -> None:
  for step in checkpointer.skipped:
    print(f"recjax: warning: {checkpointer.directory}/{step} is damaged (its arrays do not "
          "match their checksums); using an older checkpoint", file=sys.stderr, flush=True)


def start_state(experiment, checkpointer, target, data, init_from: str = ""):
  """The state a run begins from, and the step it resumes from (None unless resuming).

  The workdir's own last checkpoint wins (resume, with the input position); else `init_from`
  (a workdir of an earlier run, e.g. yesterday's) gives the params and tables, and with
  `train.init_optimizer` the dense and sparse optimizer state too, at step 0 (warm start);
  else a fresh init from `train.seed`.
  """
  if checkpointer.latest_step() is not None:
    state = checkpointer.restore(target, data)
    _report_skipped(checkpointer)
    return state, int(state.step)
  shardings = jax.tree.map(lambda s: s.sharding, target)
  state = jax.jit(lambda rng: init_state(experiment, rng), out_shardings=shardings)(
      jax.random.key(experiment.train.seed))
  if not init_from:
    return state, None
  if not (pathlib.Path(init_from) / "checkpoints").is_dir():
    raise RecjaxError(f"train.init_from: {init_from} holds no checkpoints/ to start from")
  source = checkpoint.Checkpointer(init_from)
  try:
    restored = source.restore(target)
  finally:
    source.close()
  kept = {"params": restored.params, "tables": restored.tables}
  if experiment.train.init_optimizer:
    kept |= {"opt_state": restored.opt_state, "slots": restored.slots}
  return state.replace(**kept), None


def _prune_best(best_saver, checkpointed: int, drop_later: bool = False) -> None:
  """Keeps the best-state checkpoint a resume from step `checkpointed` would need (the last
  one at or before it) and, unless `drop_later` (on resume: states of a lost future), the
  later ones; a kill at any point then leaves the best checkpoint the replayed run expects."""
  steps = best_saver.steps()
  upto = [s for s in steps if s <= checkpointed]
  for step in upto[:-1] + ([s for s in steps if s > checkpointed] if drop_later else []):
    best_saver.delete(step)


@dataclasses.dataclass
class _Run:
  """What the helpers of one run share: where it writes, its mesh, input, savers, writer."""
  experiment: Any
  workdir: pathlib.Path
  mesh: Any
  chief: bool                     # the one process that writes summaries and exports
  data: Any                       # the train iterator, checkpointed with the state
  eval_split: Any                 # None: no evaluation
  checkpointer: checkpoint.Checkpointer
  best_saver: checkpoint.Checkpointer
  evaluations: bookkeeping.Evaluations
  writer: Any                     # TensorBoard


def _make_mesh(cfg):
  mesh = sharding.make_mesh()
  if cfg.batch_size % mesh.size or cfg.eval_batch_size % mesh.size:
    raise ValueError(f"train.batch_size and eval_batch_size must divide by {mesh.size} devices")
  return mesh


def _splits(experiment, run_eval: bool):
  """The train split, and the eval split where there is one to evaluate on. Every process
  reads every row and takes its share of each global batch (input/pipeline.py)."""
  train_split = input_lib.load_split(experiment, "train")
  has_eval = run_eval and (experiment.data.eval or experiment.data.eval_fraction)
  return train_split, input_lib.load_split(experiment, "eval") if has_eval else None


def _seen_ids(experiment, workdir, train_split, init_from, chief: bool) -> dict:
  """Saves the ids this run trains on (with those of its `init_from` run); the summary's
  count of ids the earlier run never saw (empty without `init_from`)."""
  seen_now = seen_ids.of_split(experiment, train_split.arrays)
  seen_before = seen_ids.load(init_from) if init_from else {}
  if chief:
    seen_ids.save(workdir, seen_ids.union(seen_now, seen_before))
  if not init_from:
    return {}
  new = seen_ids.new_ids(seen_now, seen_before)
  return {"init_from": str(init_from), "new_ids": new,
          "new_id_share": sum(new.values()) / max(sum(map(len, seen_now.values())), 1)}


def _write_scalars(writer, step: int, scalars: dict) -> None:
  with writer.as_default(step=step):
    for name, value in scalars.items():
      tf.summary.scalar(name, value)


def _evaluate_at(run: _Run, step: int, state) -> dict:
  """Evaluates `state`, records it (early stopping, the best state) and logs its metrics."""
  metrics = evaluate(run.experiment, state, run.eval_split, run.mesh)
  run.evaluations.add(step, metrics, state)
  _write_scalars(run.writer, step, {f"eval/{name}": value for name, value in metrics.items()})
  run.evaluations.write()
  return metrics


def _train_steps(run: _Run, state, train_step, batch_sharding, start: int, steps: int):
  """Steps from `start` to `steps` or to an early stop, logging, saving and evaluating as
  due; the losses are checked finite first, so no state after a NaN loss is saved or
  evaluated. Returns the state, the last step done and the `StepLog`."""
  cfg = run.experiment.train
  book = bookkeeping.StepLog(run.experiment, start)
  progress = tqdm.tqdm(total=steps, initial=start, unit="step",
                       disable=not (cfg.progress_bar and run.chief),
                       mininterval=1.0, dynamic_ncols=True)
  final = start
  for step in (range(start, steps) if not run.evaluations.tracker.stop else ()):
    state, metrics = train_step(state, sharding.to_global(next(run.data), batch_sharding))
    book.record(state.step, metrics)
    progress.update(1)
    done = final = step + 1
    log_due = done % cfg.log_every == 0 or done == steps
    save_due = done % cfg.checkpoint_every == 0 and done < steps
    eval_due = (run.eval_split is not None and cfg.eval_every and done % cfg.eval_every == 0
                and done < steps)
    if log_due or save_due or eval_due:
      book.check_finite(done, run.checkpointer)
    if log_due:
      scalars = book.log(done)
      progress.set_postfix(loss=f"{book.loss:.4f}",
                           examples_per_s=f"{scalars['train/examples_per_s']:,.0f}")
      _write_scalars(run.writer, done, scalars)
    if save_due:
      run.checkpointer.save(done, state, run.data)
      _prune_best(run.best_saver, done)
    if eval_due:
      _evaluate_at(run, done, state)
      if run.evaluations.tracker.stop:
        print(f"recjax: early stop at step {done}: no {cfg.early_stop_metric} improvement in "
              f"{cfg.patience} evaluations (best at step "
              f"{run.evaluations.tracker.best_step})", flush=True)
        break
  progress.close()
  return state, final, book


def _final_evaluation(run: _Run, state, final: int) -> dict:
  """The summary's eval entries: the final state's metrics (the last evaluation's where it
  was at the final step), every evaluation, and the best step."""
  metrics = run.evaluations.last(final)
  if metrics is None:
    metrics = _evaluate_at(run, final, state)
  _prune_best(run.best_saver, final)
  return {"eval": metrics, "evaluations": run.evaluations.records,
          "best_step": run.evaluations.tracker.best_step}


def _export(run: _Run, state, target, final: int) -> dict:
  """The run's exports (`writes.write_run`) from the final state and the best evaluation's,
  restored from `best_checkpoint/`."""
  from recjax.export import writes   # TF graph building only when exporting
  best = run.evaluations.best(final)
  best_state = None
  if best["step"] != final:
    best_state = run.best_saver.restore(target, step=best["step"])
  if jax.process_count() > 1:   # every process takes part in gathering the tables whole
    replicate = jax.jit(lambda s: s, out_shardings=sharding.replicated(run.mesh))
    state = replicate(state)
    best_state = replicate(best_state) if best_state is not None else None
  if not run.chief:
    return {}
  return writes.write_run(run.experiment, run.workdir, state, best_state, best)


def train_and_evaluate(experiment, workdir, *, run_eval: bool = True,
                       run_export: bool = True, init_from: str | None = None) -> dict:
  """Trains to `train.steps` (resuming from the last checkpoint, or warm-starting from
  `init_from` / `train.init_from`), evaluating every `train.eval_every` steps and at the end,
  stopping early per `train.patience`; exports the latest and the best state."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cfg = experiment.train
  init_from = cfg.init_from if init_from is None else init_from
  chief = jax.process_index() == 0

  mesh = _make_mesh(cfg)
  train_split, eval_split = _splits(experiment, run_eval)
  steps = cfg.steps or cfg.epochs * input_lib.batches_per_epoch(train_split, cfg.batch_size)
  data = input_lib.train_iterator(train_split, cfg.batch_size, steps, cfg.seed,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())

  target = state_target(experiment, mesh)
  state_sharding = jax.tree.map(lambda s: s.sharding, target)
  batch_sharding = sharding.batch_sharding(mesh)

  meaning = fingerprint.of(experiment)
  checkpointer = checkpoint.Checkpointer(workdir, cfg.keep_checkpoints, fingerprint=meaning)
  best_saver = checkpoint.Checkpointer(workdir, None, name="best_checkpoint",
                                       fingerprint=meaning)
  state, resumed_from = start_state(experiment, checkpointer, target, data, init_from)
  hugepages.advise((state.tables, state.slots))    # donated steps keep these buffers
  _prune_best(best_saver, resumed_from or 0, drop_later=True)
  if resumed_from is not None:
    print(f"recjax: resuming from the checkpoint at step {resumed_from}", flush=True)
  elif init_from:
    print(f"recjax: warm start from {init_from}", flush=True)
  start = int(state.step)
  new_ids = _seen_ids(experiment, workdir, train_split, init_from, chief)
  evaluations = bookkeeping.Evaluations(cfg, workdir / "evaluations.json", best_saver, chief)
  if resumed_from is not None:
    evaluations.resume(start)

  train_step = jax.jit(make_train_step(experiment, mesh),
                       in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, None), donate_argnums=0)
  writer = (tf.summary.create_file_writer(str(workdir / "tensorboard")) if chief
            else tf.summary.create_noop_writer())
  run = _Run(experiment, workdir, mesh, chief, data, eval_split, checkpointer, best_saver,
             evaluations, writer)
  state, final, book = _train_steps(run, state, train_step, batch_sharding, start, steps)
  if final > start and checkpointer.latest_step() != final:
    checkpointer.save(final, state, data)
  checkpointer.close()

  summary = {"steps": final, "resumed_from": resumed_from, **book.summary(),
             **({"damaged_checkpoints_skipped": checkpointer.skipped}
                if checkpointer.skipped else {}),
             "train_rows": train_split.rows, "bad_rows": train_split.bad_rows,
             **book.overflow_summary(), "checkpoint": str(checkpointer.directory / str(final))}
  if final < steps:
    summary["stopped_early_at"] = final
  summary |= new_ids
  if eval_split is not None:
    summary |= _final_evaluation(run, state, final)
  writer.flush()
  if run_export and experiment.export.enabled:
    summary |= _export(run, state, target, final)
  best_saver.close()
  if chief:
    jsonio.write(workdir / "summary.json", summary)
  return summary

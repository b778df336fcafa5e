"""The training loop: `train_and_evaluate(experiment, workdir)` and its pure step functions.

Order as big_vision: mesh, input, shapes, shardings, restore-or-init, step, loop. The step
differentiates the loss with respect to dense parameters and to the pooled embeddings; optax
updates the former, `embedding.apply_gradients` the touched table rows. The state is donated.

The lifecycle around the loop: a run resumes from its own last checkpoint, or warm-starts
from another workdir's (`init_from`: yesterday's model, step 0, new ids counted per table);
a NaN or infinite loss stops it before any later state is saved; evaluations every
`eval_every` steps feed early stopping, and the best evaluation's state is kept in
`best_checkpoint/` and exported to `export/best` beside the final `export/latest`.
"""

import dataclasses
import json
import logging
import pathlib
import shutil
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
import tqdm

from recjax.train import checkpoint
from recjax.train import early_stop
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
  _, plans = embedding.plan(experiment.features, experiment.groups)
  embedded = embedding.lookup(tables, plans, batch["ids"], batch["weights"], mesh)
  return experiment.model.apply({"params": params}, embedded, batch["dense"])


def init_state(experiment, rng) -> TrainState:
  specs, plans = embedding.plan(experiment.features, experiment.groups)
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
  _, plans = embedding.plan(experiment.features, experiment.groups)
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
  specs, _ = embedding.plan(experiment.features, experiment.groups)
  replicated = jax.tree.map(lambda _: sharding.replicated(mesh), shapes)
  return replicated.replace(tables=embedding.shardings(specs, shapes.tables, mesh),
                            slots=embedding.shardings(specs, shapes.slots, mesh))


def state_target(experiment, mesh):
  """Shapes with target shardings of the train state, for init and restore."""
  shapes = jax.eval_shape(lambda: init_state(experiment, jax.random.key(0)))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, state_shardings(experiment, mesh, shapes))


def restore_state(experiment, workdir, mesh) -> TrainState:
  checkpointer = checkpoint.Checkpointer(workdir)
  try:
    return checkpointer.restore(state_target(experiment, mesh))
  finally:
    checkpointer.close()


def _on_overflow(experiment, counts: dict[str, int], step: int) -> None:
  """Capacity overflow took the correct slower path; say so per group, or stop where the
  group's `on_overflow` asks to."""
  for group in experiment.groups:
    if not counts.get(group.name):
      continue
    message = (f"group {group.name!r}: {counts[group.name]} embedding ids exceeded the "
               f"all_to_all capacity in the steps up to {step}; raise "
               f"groups.{group.name}.capacity_factor")
    if group.on_overflow == "error":
      raise RecjaxError(message)
    logging.warning("recjax: %s (they took the slower all-gather path)", message)


def start_state(experiment, checkpointer, target, data, init_from: str = ""):
  """The state a run begins from, and the step it resumes from (None unless resuming).

  The workdir's own last checkpoint wins (resume, with the input position); else `init_from`
  (a workdir of an earlier run, e.g. yesterday's) gives the params and tables, and with
  `train.init_optimizer` the dense and sparse optimizer state too, at step 0 (warm start);
  else a fresh init from `train.seed`.
  """
  resumed_from = checkpointer.latest_step()
  if resumed_from is not None:
    return checkpointer.restore(target, data), resumed_from
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


def _check_finite(losses, first_step: int, checkpointer) -> None:
  """Stops the run at the first NaN or infinite loss, before any later state is saved."""
  values = np.asarray(jax.device_get(losses), np.float64)
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    last_good = checkpointer.latest_step()
    kept = (f"the last good checkpoint is at step {last_good}" if last_good is not None
            else "no checkpoint was written")
    raise RecjaxError(
        f"step {first_step + int(bad[0])}: the training loss is {values[bad[0]]}; the run "
        f"stopped ({kept}). Lower optimizer.dense.learning_rate or "
        f"optimizer.sparse.learning_rate, or check the data")


def _prune_best(best_saver, checkpointed: int, drop_later: bool = False) -> None:
  """Keeps the best-state checkpoint a resume from step `checkpointed` would need (the last
  one at or before it) and, unless `drop_later` (on resume: states of a lost future), the
  later ones; a kill at any point then leaves the best checkpoint the replayed run expects."""
  steps = best_saver.steps()
  upto = [s for s in steps if s <= checkpointed]
  for step in upto[:-1] + ([s for s in steps if s > checkpointed] if drop_later else []):
    best_saver.delete(step)


def _export_all(experiment, state, workdir, tracker, best_saver, target, mesh, final_step,
                chief) -> dict:
  """`export/latest` from the final state, `export/best` from the best evaluation's state
  (with `export/best.json` naming its step); `saved_model` stays as a link to the latest."""
  from recjax.export import saved_model as export   # TF graph building only when exporting
  replicate = jax.jit(lambda s: s, out_shardings=sharding.replicated(mesh))
  root = workdir / "export"
  best_step = tracker.best_step if tracker.best_step is not None else final_step
  best_state = None
  if best_step != final_step:
    best_state = best_saver.restore(target, step=best_step)
  if jax.process_count() > 1:   # every process takes part in gathering the tables whole
    state = replicate(state)
    best_state = replicate(best_state) if best_state is not None else None
  if not chief:
    return {}
  latest = export.export(experiment, state, root / "latest")
  towers = {}
  if any(t.kind.retrieval for t in experiment.tasks):   # two towers, each served alone
    from recjax.export import towers as tower_export
    towers = tower_export.export_towers(experiment, state, root)
  if best_state is None:
    tmp = root / ".best-copy"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(latest, tmp)
    shutil.rmtree(root / "best", ignore_errors=True)
    tmp.rename(root / "best")
    best = root / "best"
  else:
    best = export.export(experiment, best_state, root / "best")
  (root / "best.json").write_text(json.dumps(
      {"step": best_step, "metric": tracker.metric if tracker.best_step is not None else None,
       "value": tracker.best_value}))
  alias = workdir / "saved_model"
  if alias.is_symlink() or not alias.exists():
    alias.unlink(missing_ok=True)
    alias.symlink_to(pathlib.Path("export") / "latest")
  return {"saved_model": str(latest), "export": {"latest": str(latest), "best": str(best),
                                                  "best_step": best_step, **towers}}


def train_and_evaluate(experiment, workdir, *, run_eval: bool = True,
                       run_export: bool = True, init_from: str | None = None) -> dict:
  """Trains to `train.steps` (resuming from the last checkpoint, or warm-starting from
  `init_from` / `train.init_from`), evaluating every `train.eval_every` steps and at the end,
  stopping early per `train.patience`; exports the latest and the best state."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  cfg = experiment.train
  init_from = cfg.init_from if init_from is None else init_from

  mesh = sharding.make_mesh()
  if cfg.batch_size % mesh.size or cfg.eval_batch_size % mesh.size:
    raise ValueError(f"train.batch_size and eval_batch_size must divide by {mesh.size} devices")
  # Every process reads every row and takes its share of each global batch (input.py).
  train_split = input_lib.load_split(experiment, "train")
  eval_split = (input_lib.load_split(experiment, "eval")
                if run_eval and (experiment.data.eval or experiment.data.eval_fraction) else None)
  steps = cfg.steps or cfg.epochs * input_lib.batches_per_epoch(train_split, cfg.batch_size)
  data = input_lib.train_iterator(train_split, cfg.batch_size, steps, cfg.seed,
                                  process_index=jax.process_index(),
                                  process_count=jax.process_count())
  chief = jax.process_index() == 0      # the one process that writes summaries and exports

  target = state_target(experiment, mesh)
  state_sharding = jax.tree.map(lambda s: s.sharding, target)
  batch_sharding = sharding.batch_sharding(mesh)
  checkpointer = checkpoint.Checkpointer(workdir, cfg.keep_checkpoints)
  best_saver = checkpoint.Checkpointer(workdir, None, name="best_checkpoint")
  state, resumed_from = start_state(experiment, checkpointer, target, data, init_from)
  hugepages.advise((state.tables, state.slots))    # donated steps keep these buffers
  _prune_best(best_saver, resumed_from or 0, drop_later=True)
  if resumed_from is not None:
    print(f"recjax: resuming from the checkpoint at step {resumed_from}", flush=True)
  elif init_from:
    print(f"recjax: warm start from {init_from}", flush=True)
  start = int(state.step)

  seen_now = seen_ids.of_split(experiment, train_split.arrays)
  seen_before = seen_ids.load(init_from) if init_from else {}
  if chief:
    seen_ids.save(workdir, seen_ids.union(seen_now, seen_before))

  tracker = early_stop.Tracker(cfg.early_stop_metric, cfg.patience, cfg.min_delta)
  evaluations_file = workdir / "evaluations.json"
  evaluations = []
  if resumed_from is not None and evaluations_file.exists():
    evaluations = [e for e in json.loads(evaluations_file.read_text()) if e["step"] <= start]
  for record in evaluations:
    tracker.update(record["step"], record)

  train_step = jax.jit(make_train_step(experiment, mesh), in_shardings=(state_sharding, batch_sharding),
                       out_shardings=(state_sharding, None), donate_argnums=0)
  writer = (tf.summary.create_file_writer(str(workdir / "tensorboard")) if chief
            else tf.summary.create_noop_writer())

  def run_evaluation(step, state):
    metrics = evaluate(experiment, state, eval_split, mesh)
    evaluations.append({"step": step, **metrics})
    if tracker.update(step, metrics) and step not in best_saver.steps():
      best_saver.save(step, state)
    with writer.as_default(step=step):
      for name, value in metrics.items():
        tf.summary.scalar(f"eval/{name}", value)
    if chief:
      evaluations_file.write_text(json.dumps(evaluations, indent=2))
    return metrics

  progress = tqdm.tqdm(total=steps, initial=start, unit="step",
                       disable=not (cfg.progress_bar and chief),
                       mininterval=1.0, dynamic_ncols=True)
  losses_since_log, task_losses, overflows, timed_steps, timer = [], [], [], 0, None
  unchecked, first_unchecked = [], start + 1
  total_overflow, loss, task_loss = {g.name: 0 for g in experiment.groups}, None, {}
  final = start
  for step in (range(start, steps) if not tracker.stop else ()):
    batch = sharding.to_global(next(data), batch_sharding)
    state, step_metrics = train_step(state, batch)
    losses_since_log.append(step_metrics["loss"])
    task_losses.append(step_metrics.get("task_loss", {}))
    unchecked.append(step_metrics["loss"])
    overflows.append(step_metrics["embedding_overflow"])
    if timer is None:               # the first step compiles: time from the second on
      jax.block_until_ready(state.step)
      timer = time.perf_counter()
    else:
      timed_steps += 1
    progress.update(1)
    done = final = step + 1
    log_due = done % cfg.log_every == 0 or done == steps
    save_due = done % cfg.checkpoint_every == 0 and done < steps
    eval_due = (eval_split is not None and cfg.eval_every and done % cfg.eval_every == 0
                and done < steps)
    if log_due or save_due or eval_due:   # no state after a NaN loss is saved or evaluated
      _check_finite(unchecked, first_unchecked, checkpointer)
      unchecked, first_unchecked = [], done + 1
    if log_due:
      loss = float(np.mean(jax.device_get(losses_since_log)))
      task_loss = {name: float(np.mean(values)) for name, values in jax.tree.map(
          lambda *v: np.asarray(v), *jax.device_get(task_losses)).items()}
      task_losses = []
      overflow = {g: int(np.sum([o[g] for o in jax.device_get(overflows)])) for g in total_overflow}
      losses_since_log, overflows = [], []
      total_overflow = {g: total_overflow[g] + overflow[g] for g in total_overflow}
      if any(overflow.values()):
        _on_overflow(experiment, overflow, done)
      rate = timed_steps * cfg.batch_size / max(time.perf_counter() - timer, 1e-9)
      progress.set_postfix(loss=f"{loss:.4f}", examples_per_s=f"{rate:,.0f}")
      with writer.as_default(step=done):
        tf.summary.scalar("train/loss", loss)
        for name, value in task_loss.items():
          tf.summary.scalar(f"train/loss/{name}", value)
        tf.summary.scalar("train/examples_per_s", rate)
        for group, count in overflow.items():
          tf.summary.scalar(f"train/embedding_overflow/{group}", count)
    if save_due:
      checkpointer.save(done, state, data)
      _prune_best(best_saver, done)
    if eval_due:
      run_evaluation(done, state)
      if tracker.stop:
        print(f"recjax: early stop at step {done}: no {cfg.early_stop_metric} improvement in "
              f"{cfg.patience} evaluations (best at step {tracker.best_step})", flush=True)
        break
  progress.close()
  examples_per_s = (timed_steps * cfg.batch_size / (time.perf_counter() - timer)
                    if timer and timed_steps else None)
  if final > start and checkpointer.latest_step() != final:
    checkpointer.save(final, state, data)
  checkpointer.close()

  summary = {"steps": final, "resumed_from": resumed_from, "loss": loss,
             **({"task_loss": task_loss} if len(experiment.tasks) > 1 and loss is not None
                else {}),
             "examples_per_s": examples_per_s,
             "train_rows": train_split.rows, "bad_rows": train_split.bad_rows,
             "embedding_overflow": sum(total_overflow.values()),
             "embedding_overflow_by_group": total_overflow,
             "checkpoint": str(checkpointer.directory / str(final))}
  if final < steps:
    summary["stopped_early_at"] = final
  if init_from:
    new = seen_ids.new_ids(seen_now, seen_before)
    summary |= {"init_from": str(init_from), "new_ids": new,
                "new_id_share": sum(new.values()) / max(sum(map(len, seen_now.values())), 1)}
  if eval_split is not None:
    last = evaluations[-1] if evaluations and evaluations[-1]["step"] == final else None
    summary["eval"] = ({k: v for k, v in last.items() if k != "step"} if last
                       else run_evaluation(final, state))
    summary["evaluations"] = evaluations
    summary["best_step"] = tracker.best_step
    _prune_best(best_saver, final)
  writer.flush()
  if run_export and experiment.export.enabled:
    summary |= _export_all(experiment, state, workdir, tracker, best_saver, target, mesh,
                           final, chief)
  best_saver.close()
  if chief:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary

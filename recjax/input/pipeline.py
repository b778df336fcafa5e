"""Input: read every source of a split, transform whole columns, and serve pre-batched blocks.

A split is read (`readers`: CSV/TSV, Parquet, TFRecord, synthetic) and transformed once,
column by column (vectorised numpy, the same hashing op as the SavedModel), into int32 ids,
float32 dense values and labels; with `data.workers` > 1, worker processes each take pieces of
the files (`pieces`) and the parts join in source order, the same split for any worker count.
Training batches are a Grain `MapDataset` over batch indices: batch i of epoch e gathers rows
`permutation(seed, e)[i*B:(i+1)*B]`, so one element is a whole numpy batch (no per-row
Python) and the iterator state saved with a checkpoint resumes at exactly the next batch.

Bad input never passes silently: a missing file or column is an error naming it, and a bad row
(wrong field count, a number that is unparsable, missing, NaN or infinite, an id out of range,
a label other than 0/1, a value a feature's transform rejects) either stops the run naming its
file and line or is counted and skipped, as `data.bad_rows` says (`bad_rows`). The counts,
merged over the workers' parts, are the split's `bad_rows`.
"""

import concurrent.futures
import dataclasses
import functools
import glob
import multiprocessing

import grain
import jax
import numpy as np

from recjax.input import bad_rows as bad_rows_lib
from recjax.input import labels as labels_lib
from recjax.features import spec as features_lib
from recjax.input import pieces as pieces_lib
from recjax.input import readers
from recjax.errors import DataError
from recjax.features.kinds import problems as problems_lib


@dataclasses.dataclass(frozen=True)
class Split:
  """A transformed split in memory: ids/weights {feature: [N, L]}, dense [N, D], and per
  task labels, label_masks (0: missing) and loss_weights {task: [N]}; `bad_rows` counts the
  rows skipped by reason."""
  arrays: dict
  files: tuple[str, ...]
  bad_rows: dict = dataclasses.field(default_factory=dict)
  groups: dict = dataclasses.field(default_factory=dict)   # {column: int64 codes [N]} for GAUC

  @property
  def rows(self) -> int:
    return len(self.arrays["dense"])


def resolve_files(patterns, key: str) -> list[str]:
  files = []
  for pattern in patterns:
    matched = sorted(glob.glob(pattern))
    if not matched:
      raise DataError(f"{key}: no file matches {pattern!r}")
    files.extend(matched)
  return files


def _transform(experiment, read: readers.Read, numeric, with_labels: bool,
               tally: bad_rows_lib.Tally) -> dict | None:
  """One source's columns -> arrays, after the bad-row policy (None: no row left).

  Rows the reader or the labels find bad are dropped first; then the feature transforms
  report the rows whose values they reject (`features.transform(problems=...)`), which are
  dropped from the transformed arrays in turn."""
  columns = read.columns
  problems = read.problems + bad_rows_lib.non_finite(columns, numeric)
  if with_labels:
    parsed = {t.name: labels_lib.labels(t, columns) for t in experiment.tasks}
    problems += [p for _, _, found in parsed.values() for p in found]
  keep = tally.keep(read, problems)
  where = read.where
  if not keep.all():
    kept = np.flatnonzero(keep)
    if not len(kept):
      return None
    columns = {name: values[kept] for name, values in columns.items()}
    parsed = {name: tuple(a[kept] for a in arrays[:2]) for name, arrays in parsed.items()
              } if with_labels else {}
    where = lambda row: read.where(int(kept[row]))
  if not len(next(iter(columns.values()), ())):
    return None
  found = problems_lib.Problems(where, collect=experiment.data.bad_rows == "skip")
  arrays = features_lib.transform(experiment.features, columns, problems=found)
  if with_labels:
    sample_weight = (columns[experiment.data.sample_weight] if experiment.data.sample_weight
                     else None)
    arrays["labels"] = {name: label for name, (label, *_) in parsed.items()}
    arrays["label_masks"] = {name: mask for name, (_, mask, *_) in parsed.items()}
    arrays["loss_weights"] = {
        t.name: labels_lib.loss_weights(t, *parsed[t.name][:2], columns, sample_weight)
        for t in experiment.tasks}
    arrays[_GROUPS] = {c: np.asarray(columns[c]).astype(str) for c in _group_columns(experiment)}
  keep = tally.mark(found.found, where, len(arrays["dense"]))
  if not keep.all():
    arrays = jax.tree.map(lambda v: v[keep], arrays)
  return arrays if keep.any() else None


def _load_piece(experiment, piece: pieces_lib.Piece, needed, numeric, with_labels: bool):
  """Reads and transforms one piece (in a worker process when there are several): its arrays
  (None: no row left) and its bad-row tally."""
  data = experiment.data
  tally = bad_rows_lib.Tally(data.bad_rows, data.max_bad_fraction)
  read = readers.read(piece.path, data, needed, numeric, piece.span)
  return _transform(experiment, read, numeric, with_labels, tally), tally


_POOL = {}        # {workers: the pool}: at most one at a time


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """`workers` processes started by a fork server (JAX's and TensorFlow's threads do not
  survive a plain fork). The server imports the main script and recjax once, and the pool
  stays up for the process's later splits (eval, the next day's data), so only the first
  split pays for starting it. (As with any multiprocessing, a script that loads a split with
  workers needs the `if __name__ == "__main__":` guard.)"""
  if workers not in _POOL:
    for pool in _POOL.values():
      pool.shutdown(wait=False, cancel_futures=True)
    _POOL.clear()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "recjax.input.pipeline"])
    _POOL[workers] = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
  return _POOL[workers]


def _map_pieces(function, pieces: list, workers: int) -> list:
  """`function` over the pieces, in order, in this process or in `workers` worker processes;
  the first piece's error, in source order, is raised."""
  if workers <= 1 or len(pieces) <= 1:
    return [function(p) for p in pieces]
  futures = [_pool(workers).submit(function, p) for p in pieces]
  try:
    return [f.result() for f in futures]
  except concurrent.futures.process.BrokenProcessPool:
    _POOL.clear()                   # a worker died (e.g. out of memory): start afresh next time
    raise
  finally:
    for f in futures:
      f.cancel()


_GROUPS = "_groups"     # raw grouping values of a part, coded once the parts are joined


def _group_columns(experiment) -> list[str]:
  return list(dict.fromkeys(t.group_by for t in experiment.tasks if t.group_by))


def _holdout(data, split: str, rows: int) -> np.ndarray | slice:
  """The rows of `split` when `data.eval_fraction` holds a seeded share of the train rows
  out as the eval split (the rest trains); all rows otherwise."""
  if not data.eval_fraction:
    return slice(None)
  held_out = np.random.default_rng(data.split_seed).random(rows) < data.eval_fraction
  return np.flatnonzero(held_out if split == "eval" else ~held_out)


def load_split(experiment, split: str, *, with_labels: bool = True,
               process_index: int = 0, process_count: int = 1) -> Split:
  """Reads and transforms every source of `data.<split>`. With several processes, each
  reads its share of the files, or of the rows when there are fewer files than processes."""
  data = experiment.data
  held_out = split == "eval" and data.eval_fraction > 0
  patterns = data.train if held_out else getattr(data, split)
  if not patterns:
    raise DataError(f"data.{split}: no files configured")
  files = (list(patterns) if data.format == "synthetic"
           else resolve_files(patterns, f"data.{split}"))
  by_file = process_count > 1 and len(files) >= process_count and not data.eval_fraction
  if by_file:
    files = files[process_index::process_count]
  numeric = {c for f in experiment.features for c in f.numeric_columns}
  task_columns = []
  if with_labels:
    numeric |= {t.label for t in experiment.tasks if t.numeric_label}
    numeric |= {t.upsample_column for t in experiment.tasks if t.upsample_column}
    numeric |= {data.sample_weight} - {""}
    task_columns = [c for t in experiment.tasks for c in t.columns] + [data.sample_weight]
  needed = list(dict.fromkeys(
      [c for f in experiment.features for c in f.columns] + [c for c in task_columns if c]))
  load = functools.partial(_load_piece, experiment, needed=needed, numeric=numeric,
                           with_labels=with_labels)
  results = _map_pieces(load, pieces_lib.plan(files, data, data.workers), data.workers)
  tally = bad_rows_lib.Tally(data.bad_rows, data.max_bad_fraction)
  for _, part in results:
    tally.merge(part)
  tally.check(f"data.{split}")
  parts = [arrays for arrays, _ in results if arrays is not None]
  if not parts:
    raise DataError(f"data.{split}: no rows in {', '.join(files)}")
  arrays = jax.tree.map(lambda *p: np.concatenate(p), *parts)
  if with_labels and split == "train":
    _check_classes(experiment, arrays, files)
  rows = _holdout(data, split, len(arrays["dense"]))
  step = 1 if by_file else process_count
  arrays = jax.tree.map(lambda v: v[rows][process_index % step::step], arrays)
  groups = {c: labels_lib.group_codes(v) for c, v in arrays.pop(_GROUPS, {}).items()}
  return Split(arrays, tuple(files), tally.summary, groups)


def _check_classes(experiment, arrays, files, at_least: int = 100) -> None:
  """A binary task whose training labels (`at_least` of them or more) are all one class
  cannot learn, and its AUC is NaN: most often `label.positive` matches no value, e.g.
  " >50K" read with its space."""
  for task in experiment.tasks:
    if not task.kind.binary or task.name not in arrays["labels"]:
      continue
    values = arrays["labels"][task.name][arrays["label_masks"][task.name] > 0]
    if len(values) < at_least or values.min() != values.max():
      continue
    try:
      seen = np.unique(readers.read(files[0], experiment.data, [task.label], set()).columns[
          task.label].astype(str))
      shown = ", ".join(repr(str(v)) for v in seen[:8]) + (" ..." if len(seen) > 8 else "")
    except Exception as e:      # noqa: BLE001 - the message is the point; say why not
      shown = f"(not read again: {type(e).__name__})"
    why = (f"{'no' if values[0] == 0 else 'every'} value is one of positive "
           f"{task.positive!r}" if task.positive else "numeric labels 0 or 1")
    raise DataError(f"data.train: every row of task {task.name!r} has label "
                    f"{int(values[0])} ({why}); the values of column {task.label!r} in "
                    f"{files[0]}: {shown}")


class _TrainBatches:
  """This process's share of global batch i of an endless sequence of epochs, each a fresh
  seeded permutation of the rows.

  Every process holds the same rows and draws the same permutation, then takes its slice of
  each global batch: so the global batches, and the trained model, are the same for any
  number of processes, and the iterator position (a batch index) restores onto any.
  """

  def __init__(self, arrays, batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1):
    self.arrays, self.batch_size, self.seed = arrays, batch_size, seed
    self.rows = len(arrays["dense"])
    self.per_epoch = self.rows // batch_size
    local = batch_size // process_count
    self.local = slice(process_index * local, (process_index + 1) * local)

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(self.rows)

  def __call__(self, index: int) -> dict:
    epoch, k = divmod(int(index), self.per_epoch)
    rows = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size][self.local]
    return jax.tree.map(lambda array: array[rows], self.arrays)


def batches_per_epoch(split: Split, batch_size: int) -> int:
  return split.rows // batch_size


def train_iterator(split: Split, batch_size: int, num_batches: int, seed: int,
                   num_threads: int = 2, process_index: int = 0, process_count: int = 1):
  """A checkpointable Grain iterator over `num_batches` shuffled global batches of
  `batch_size` rows, of which it yields this process's share."""
  if split.rows < batch_size:
    raise DataError(f"{', '.join(split.files)}: {split.rows} rows, fewer than one batch "
                    f"of {batch_size}")
  if batch_size % process_count:
    raise DataError(f"train.batch_size {batch_size} does not split over {process_count} processes")
  batches = _TrainBatches(split.arrays, batch_size, seed, process_index, process_count)
  dataset = grain.MapDataset.range(num_batches).map(batches)
  return iter(dataset.to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=2 * num_threads)))


def eval_batches(split: Split, batch_size: int):
  """Every row once, in order; the last batch is padded and carries mask 0 on padding."""
  for start in range(0, split.rows, batch_size):
    n = min(batch_size, split.rows - start)
    batch = jax.tree.map(lambda v: np.concatenate(
        [v[start:start + n], np.zeros((batch_size - n,) + v.shape[1:], v.dtype)]), split.arrays)
    batch["mask"] = (np.arange(batch_size) < n).astype(np.float32)
    yield batch

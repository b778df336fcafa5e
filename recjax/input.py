"""Input: read CSV / Parquet files, transform whole columns, and serve pre-batched blocks via Grain.

A split is read and transformed once, column by column (vectorised numpy, the same hashing op
as the SavedModel), into int32 ids, float32 dense values and labels. Training batches are a
Grain `MapDataset` over batch indices: batch i of epoch e gathers rows
`permutation(seed, e)[i*B:(i+1)*B]`, so one element is a whole numpy batch (no per-row Python)
and the iterator state saved with a checkpoint resumes at exactly the next batch.

Bad input never passes silently: a missing file, a row with the wrong number of fields, an
unparsable or missing number and a non-finite value each raise `DataError` naming the file and
the line (CSV) or row (Parquet).
"""

import csv
import dataclasses
import functools
import glob
import gzip

import grain
import jax
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recjax import features as features_lib
from recjax import synthetic
from recjax.errors import DataError


@dataclasses.dataclass(frozen=True)
class Split:
  """A transformed split in memory: ids/weights [N, F, L], dense [N, D], label [N]."""
  arrays: dict
  files: tuple[str, ...]

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


def _open_text(path: str):
  return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def _locate_csv_error(path, data, names, numeric, message) -> DataError:
  """Slow, obvious scan that finds the line behind a pyarrow parse error."""
  with _open_text(path) as f:
    reader = csv.reader(f, delimiter=data.delimiter, skipinitialspace=data.strip_whitespace)
    if data.header:
      names = next(reader, names)
    index = {name: i for i, name in enumerate(names)}
    for row in reader:
      if not row:
        continue
      if len(row) != len(names):
        return DataError(f"{path}:{reader.line_num}: expected {len(names)} fields, found "
                         f"{len(row)}: {data.delimiter.join(row)[:200]!r}")
      for column in numeric:
        text = row[index[column]].strip()
        try:
          float(text)
        except ValueError:
          what = "is empty" if not text else f"holds {text!r}, which is not a number"
          return DataError(f"{path}:{reader.line_num}: column {column!r} {what}")
  return DataError(f"{path}: {message}")


def _csv_line(path, data, row: int) -> int:
  """The line number of data row `row` (0-based, blank lines skipped as pyarrow does)."""
  with _open_text(path) as f:
    reader = csv.reader(f, delimiter=data.delimiter)
    if data.header:
      next(reader, None)
    seen = -1
    for fields in reader:
      seen += bool(fields)
      if seen == row:
        return reader.line_num
  return -1


def row_origin(path, data):
  """`where(row)` for error messages: 'file:line' for CSV, 'file, row N' for Parquet."""
  if data.format == "csv":
    return lambda row: f"{path}:{_csv_line(path, data, row)}"
  return lambda row: f"{path}, row {row + 1}"


def show(value) -> str:
  """A raw value as it appears in an error message."""
  return repr(value.item() if isinstance(value, np.generic) else value)


def _read_csv(path, data, needed, numeric) -> pa.Table:
  names = list(data.columns)
  if data.header:
    with _open_text(path) as f:
      names = next(csv.reader(f, delimiter=data.delimiter, skipinitialspace=data.strip_whitespace), [])
  elif not names:
    raise DataError(f"{path}: data.header is False, so data.columns must name the columns")
  missing = [c for c in needed if c not in names]
  if missing:
    raise DataError(f"{path}: no column {missing[0]!r}; the file has {', '.join(names)}")
  try:
    return pa_csv.read_csv(
        path,
        read_options=pa_csv.ReadOptions(column_names=None if data.header else names),
        parse_options=pa_csv.ParseOptions(delimiter=data.delimiter),
        convert_options=pa_csv.ConvertOptions(
            include_columns=needed,
            column_types={c: pa.float64() if c in numeric else pa.string() for c in needed},
            null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=False))
  except pa.ArrowInvalid as e:
    raise _locate_csv_error(path, data, names, numeric, str(e)) from None


def _read_parquet(path, needed, numeric, table=None) -> pa.Table:
  names = table.column_names if table is not None else pq.read_schema(path).names
  missing = [c for c in needed if c not in names]
  if missing:
    raise DataError(f"{path}: no column {missing[0]!r}; the file has {', '.join(names)}")
  table = pq.read_table(path, columns=needed) if table is None else table.select(needed)
  for column in needed:
    target = pa.float64() if column in numeric else pa.string()
    try:
      table = table.set_column(table.schema.get_field_index(column), column,
                               table[column].cast(target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
      raise DataError(f"{path}: column {column!r} cannot be read as {target}: {e}") from None
  return table


def read_columns(path, data, needed, numeric) -> dict[str, np.ndarray]:
  """Reads `needed` columns of one file: numeric ones as float64, the others as str objects."""
  try:
    if data.format == "csv":
      table = _read_csv(path, data, needed, numeric)
    elif data.format == "parquet":
      table = _read_parquet(path, needed, numeric)
    elif data.format == "synthetic":     # the generated columns take the Parquet path
      split = path.partition(":")[2]
      table = _read_parquet(path, needed, numeric, synthetic.generate(data.synthetic, split))
    else:
      raise DataError(f"data.format: {data.format!r} is not one of csv, parquet, synthetic")
  except (FileNotFoundError, IsADirectoryError) as e:
    raise DataError(f"{path}: {e.strerror}") from None
  columns = {}
  for name in needed:
    array = table[name]
    if array.null_count:
      if data.format == "csv":
        raise _locate_csv_error(path, data, list(data.columns), numeric, f"column {name!r} is empty")
      row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
      raise DataError(f"{row_origin(path, data)(row)}: column {name!r} is empty")
    if name not in numeric and data.strip_whitespace:
      array = pc.utf8_trim_whitespace(array)
    columns[name] = array.to_numpy(zero_copy_only=False)
  return columns


def _labels(where, label, values) -> np.ndarray:
  if label.positive:
    return np.isin(values, label.positive).astype(np.float32)
  bad = ~((values == 0) | (values == 1))
  if bad.any():
    row = int(np.flatnonzero(bad)[0])
    raise DataError(f"{where(row)}: label {label.column!r} is {show(values[row])}; numeric "
                    "labels must be 0 or 1 (or set label.positive for string labels)")
  return values.astype(np.float32)


def load_split(experiment, split: str, *, with_labels: bool = True,
               process_index: int = 0, process_count: int = 1) -> Split:
  """Reads and transforms every file of `data.<split>` (this process's share of the rows)."""
  data = experiment.data
  patterns = getattr(data, split)
  if not patterns:
    raise DataError(f"data.{split}: no files configured")
  files = (list(patterns) if data.format == "synthetic"
           else resolve_files(patterns, f"data.{split}"))
  numeric = {f.column for f in experiment.features
             if isinstance(f, features_lib.NumericFeature) or f.numeric}
  if with_labels and not experiment.label.positive:
    numeric.add(experiment.label.column)
  needed = list(dict.fromkeys(
      [f.column for f in experiment.features] + ([experiment.label.column] if with_labels else [])))
  parts = []
  for path in files:
    columns = read_columns(path, data, needed, numeric)
    where = row_origin(path, data)
    arrays = features_lib.transform(experiment.features, columns, where)
    if with_labels:
      arrays["label"] = _labels(where, experiment.label, columns[experiment.label.column])
    parts.append(arrays)
  arrays = jax.tree.map(lambda *p: np.concatenate(p)[process_index::process_count], *parts)
  return Split(arrays, tuple(files))


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

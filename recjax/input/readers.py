"""Sources: read the raw columns of one CSV/TSV, Parquet or TFRecord file, or a synthetic split.

Every source ends in the same form, so the feature transforms cannot tell them apart: numeric
columns as float64 arrays, every other column as an object array of str (a number in a
string column reads as its text, "7"; a TFRecord list as its values joined with "|").
pyarrow parses CSV and Parquet in C++ on whole files, or on the piece of one that an input
worker reads (a CSV byte range, Parquet row groups: `pieces`); TFRecords are parsed in blocks
by `tf.io.parse_example`. A CSV with a `quote_char` may hold newlines in quoted fields.

Rows that cannot be read are found here, by reason, with a message naming the file and line
(CSV: its line in the whole file, also from a piece), row (Parquet, synthetic) or record
(TFRecord); `bad_rows` decides whether they stop
the run or are counted and skipped. A missing column is always an error.
"""

import csv
import dataclasses
import gzip
import io
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from recjax.input import pieces
from recjax.input import synthetic
from recjax.features.kinds.problems import Problem
from recjax.errors import DataError

# What pyarrow's float parser accepts (surrounding spaces trimmed first).
_NUMBER = r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?|inf|infinity|nan)"


def number_mask(text: pa.Array) -> pa.Array:
  """Which trimmed string cells pyarrow's float parser accepts (null cells: False)."""
  return pc.fill_null(pc.match_substring_regex(text, f"^{_NUMBER}$", ignore_case=True), False)


@dataclasses.dataclass
class Read:
  """One source's columns, where each row came from, and the bad rows found reading it.
  `dropped` counts rows the parser left out ({reason: (count, first location)})."""
  columns: dict
  where: Callable[[int], str]
  problems: list
  dropped: dict

  @property
  def rows(self) -> int:
    return len(next(iter(self.columns.values()))) if self.columns else 0


def show(value) -> str:
  """A raw value as it appears in an error message."""
  return repr(value.item() if isinstance(value, np.generic) else value)


def _open_text(path: str):
  return gzip.open(path, "rt", newline="") if path.endswith(".gz") else open(path, newline="")


def _reader(f, data):
  if data.quote_char:
    return csv.reader(f, delimiter=data.delimiter, quotechar=data.quote_char,
                      skipinitialspace=data.strip_whitespace)
  return csv.reader(f, delimiter=data.delimiter, quoting=csv.QUOTE_NONE,
                    skipinitialspace=data.strip_whitespace)


def _csv_names(path, data) -> list[str]:
  if not data.header:
    if not data.columns:
      raise DataError(f"{path}: data.header is False, so data.columns must name the columns")
    return list(data.columns)
  with _open_text(path) as f:
    return next(_reader(f, data), [])


class _Block:
  """The text of a CSV or of a byte range of it, and the number of lines before it."""

  def __init__(self, path, data, span):
    self.path, self.data, self.span = path, data, span

  def __enter__(self):
    if self.span is None:
      self.f = _open_text(self.path)
      self.before = 0
    else:
      with open(self.path, "rb") as f:
        f.seek(self.span[0])
        text = f.read(self.span[1] - self.span[0]).decode("utf-8", "replace")
      self.f = io.StringIO(text, newline="")
      self.before = pieces.newlines_before(self.path, self.span[0])
    reader = _reader(self.f, self.data)
    if self.span is None and self.data.header:
      next(reader, None)
    return reader, self.before

  def __exit__(self, *exc):
    self.f.close()


def _scan_csv(path, data, names, numeric, span=None, find_row: int = -1):
  """Slow, obvious scan of a file or a byte range of it: the first line with the wrong field
  count or a bad number (as a message), or, with `find_row`, the line of well-formed data row
  `find_row`."""
  with _Block(path, data, span) as (reader, before):
    index, seen = {name: i for i, name in enumerate(names)}, -1
    for row in reader:
      line = before + reader.line_num
      if not row:
        continue
      if len(row) != len(names):
        if find_row < 0:
          return (f"{path}:{line}: expected {len(names)} fields, found {len(row)}: "
                  f"{data.delimiter.join(row)[:200]!r}")
        continue
      seen += 1
      if seen == find_row:
        return f"{path}:{line}"
      for column in numeric if find_row < 0 else ():
        text = row[index[column]].strip()
        try:
          float(text)
        except ValueError:
          what = "is empty" if not text else f"holds {text!r}, which is not a number"
          return f"{path}:{line}: column {column!r} {what}"
  return None


def _check_columns(path, needed, names) -> None:
  missing = [c for c in needed if c not in names]
  if missing:
    raise DataError(f"{path}: no column {missing[0]!r}; the file has {', '.join(names)}")


def _read_csv(path, data, needed, numeric, span=None) -> Read:
  """A CSV file (a gzipped one whole), or the rows in byte range `span` of it."""
  names = _csv_names(path, data)
  _check_columns(path, needed, names)
  where = lambda row: (_scan_csv(path, data, names, (), span, find_row=row)
                       or f"{path}, row {row + 1}")
  skipped = []

  def invalid_row(row):
    skipped.append(row)
    return "skip"

  def read(types):
    if span is not None and span[0] == span[1]:
      return pa.table({c: pa.array([], t) for c, t in types.items()})
    if span is None:
      source, column_names = path, None if data.header else names
    else:
      with open(path, "rb") as f:
        f.seek(span[0])
        source, column_names = pa.BufferReader(f.read(span[1] - span[0])), names
    return pa_csv.read_csv(
        source,
        read_options=pa_csv.ReadOptions(column_names=column_names),
        parse_options=pa_csv.ParseOptions(
            delimiter=data.delimiter, quote_char=data.quote_char or False,
            newlines_in_values=bool(data.quote_char),
            invalid_row_handler=invalid_row if data.bad_rows == "skip" else None),
        convert_options=pa_csv.ConvertOptions(
            include_columns=needed, column_types=types, null_values=[""],
            strings_can_be_null=False, quoted_strings_can_be_null=False))

  try:
    table = read({c: pa.float64() if c in numeric else pa.string() for c in needed})
  except pa.ArrowInvalid as e:
    if data.bad_rows == "error":
      raise DataError(_scan_csv(path, data, names, numeric, span) or f"{path}: {e}") from None
    skipped.clear()         # a bad number: read again with numbers as text, and parse them
    table = read({c: pa.string() for c in needed})
  dropped = {}
  if skipped:
    dropped["wrong_field_count"] = (len(skipped), lambda: _scan_csv(path, data, names, (), span))
  return _from_table(table, path, data, needed, numeric, where, dropped)


def _numbers(array: pa.ChunkedArray, path, column: str, problems: list) -> np.ndarray:
  """A column as float64 (NaN where bad); empty and unparsable values become problems."""
  unparsable = None
  if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
    text = pc.utf8_trim_whitespace(array)
    valid = number_mask(text)
    empty = pc.fill_null(pc.equal(text, ""), True)
    unparsable = pc.and_(pc.invert(valid), pc.invert(empty)).to_numpy(zero_copy_only=False)
    if unparsable.any():
      raw = array.to_numpy(zero_copy_only=False)
      problems.append(Problem("not_a_number", unparsable, lambda row: (
          f"column {column!r} holds {show(raw[row])}, which is not a number")))
    array = pc.if_else(valid, text, None)
  try:
    values = array.cast(pa.float64())
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
    raise DataError(f"{path}: column {column!r} cannot be read as numbers: {e}") from None
  empty = values.is_null().to_numpy(zero_copy_only=False)
  if unparsable is not None:
    empty &= ~unparsable
  if empty.any():
    problems.append(Problem("empty_value", empty, lambda row: f"column {column!r} is empty"))
  return values.fill_null(np.nan).to_numpy()


def _from_table(table: pa.Table, path, data, needed, numeric, where, dropped=None) -> Read:
  """The common end of every source: typed numpy columns and the problems found."""
  _check_columns(path, needed, table.column_names)
  columns, problems = {}, []
  for name in needed:
    array = table[name]
    if name in numeric:
      columns[name] = _numbers(array, path, name, problems)
      continue
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
      array = array.cast(pa.string())
    if array.null_count:
      problems.append(Problem("empty_value", array.is_null().to_numpy(zero_copy_only=False),
                              lambda row, name=name: f"column {name!r} is empty"))
      array = array.fill_null("")
    if data.strip_whitespace:        # ASCII whitespace: the rule the SavedModel applies too
      array = pc.ascii_trim_whitespace(array)
    columns[name] = _objects(array)
  return Read(columns, where, problems, dropped or {})


def _objects(array: pa.ChunkedArray) -> np.ndarray:
  """An object array of str with one Python string per distinct value, shared by the rows
  that hold it: creating the strings is the costly part of leaving Arrow, and columns repeat."""
  encoded = array.combine_chunks().dictionary_encode()
  return encoded.dictionary.to_numpy(zero_copy_only=False)[encoded.indices.to_numpy()]


def _read_parquet(path, data, needed, numeric, span=None) -> Read:
  """A Parquet file, or its row groups [span[0], span[1])."""
  _check_columns(path, needed, pq.read_schema(path).names)
  file = pq.ParquetFile(path)
  first, stop = span or (0, file.metadata.num_row_groups)
  table = (file.read_row_groups(range(first, stop), columns=needed) if stop > first
           else file.schema_arrow.empty_table().select(needed))
  before = sum(file.metadata.row_group(g).num_rows for g in range(first))
  return _from_table(table, path, data, needed, numeric,
                     lambda row: f"{path}, row {before + row + 1}")


def _example_kinds(path, needed, records) -> dict[str, str]:
  """The list kind (bytes_list, float_list, int64_list) of each needed feature, from the
  first records that hold it."""
  import tensorflow as tf
  kinds = {}
  for record in records.take(1000):
    example = tf.train.Example.FromString(record.numpy())
    for name in needed:
      if name not in kinds and name in example.features.feature:
        kinds[name] = example.features.feature[name].WhichOneof("kind")
    if len(kinds) == len(needed):
      return kinds
  missing = [c for c in needed if c not in kinds]
  raise DataError(f"{path}: no feature {missing[0]!r} in the first 1000 records; they hold "
                  f"{', '.join(sorted(kinds)) or 'none of the needed features'}")


def _tfrecord_table(path, needed, numeric, block: int = 65536) -> pa.Table:
  """tf.Examples as a table: single values as they are, lists joined with "|"."""
  import tensorflow as tf
  records = tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else "")
  kinds = _example_kinds(path, needed, records)
  dtypes = {"bytes_list": tf.string, "float_list": tf.float32, "int64_list": tf.int64}
  spec = {c: tf.io.RaggedFeature(dtypes[kinds[c]], row_splits_dtype=tf.int64) for c in needed}
  parts = {c: [] for c in needed}
  try:
    for batch in records.batch(block):
      for name, ragged in tf.io.parse_example(batch, spec).items():
        parts[name].append((ragged.flat_values.numpy(), ragged.row_lengths().numpy()))
  except tf.errors.OpError as e:
    raise DataError(f"{path}: {e.message}") from None
  columns = {}
  for name, blocks in parts.items():
    flat = np.concatenate([b[0] for b in blocks]) if blocks else np.zeros(0)
    lengths = np.concatenate([b[1] for b in blocks]) if blocks else np.zeros(0, np.int64)
    values = pa.array(flat, pa.binary()).cast(pa.string()) if kinds[name] == "bytes_list" \
        else pa.array(flat.astype(np.float64) if kinds[name] == "float_list" else flat)
    if (lengths == 1).all():
      columns[name] = values
      continue
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int64()),
                                                     values.cast(pa.string())), "|")
    # An empty list is an empty value: "" for a string column, missing for a number.
    columns[name] = pc.if_else(pa.array(lengths == 0), None, joined) if name in numeric else joined
  return pa.table(columns)


def read(path: str, data, needed: list[str], numeric: set[str], span=None) -> Read:
  """Reads `needed` columns of one source (`numeric` ones as float64), or of the part of it
  that `span` names (`pieces.Piece`)."""
  try:
    if data.format == "csv":
      return _read_csv(path, data, needed, numeric, span)
    if data.format == "parquet":
      return _read_parquet(path, data, needed, numeric, span)
    if data.format == "tfrecord":
      table = _tfrecord_table(path, needed, numeric)
      return _from_table(table, path, data, needed, numeric,
                         lambda row: f"{path}, record {row + 1}")
    if data.format == "synthetic":
      table = synthetic.generate(data.synthetic, path.partition(":")[2])
      return _from_table(table, path, data, needed, numeric, lambda row: f"{path}, row {row + 1}")
  except (FileNotFoundError, IsADirectoryError) as e:
    raise DataError(f"{path}: {e.strerror}") from None
  except pa.ArrowInvalid as e:
    raise DataError(f"{path}: {e}") from None
  except (OSError, pa.ArrowException) as e:    # a damaged file: a corrupt page, a bad footer
    raise DataError(f"{path}: the file is damaged or unreadable: {type(e).__name__}: "
                    f"{str(e)[:300]}") from None
  raise DataError(f"data.format: {data.format!r} is not one of csv, parquet, tfrecord, synthetic")

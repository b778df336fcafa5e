"""Pieces of a split's files: what one input worker reads and transforms.

With `data.workers` > 1, each worker takes pieces: whole files when there are at least as many
files as workers, otherwise blocks of rows within a file. A Parquet file is cut between row
groups; a CSV/TSV file at line ends, in byte ranges. Quoted fields may hold newlines (RFC 4180),
so a CSV with a `quote_char` is cut only at a newline before which the quote characters are
balanced: a quote inside a quoted field is doubled, so an odd count means the newline lies
inside a quoted field. (A stray quote character in an unquoted field would unbalance the count;
such a file wants `quote_char: ""`, or one worker.) A gzipped CSV, a TFRecord file and a
synthetic split are read whole.

The parts are joined in piece order, which is the files' order and the rows' order within each,
so a split is the same for any number of workers, bit for bit. A CSV is always read through its
byte range (one piece per file for one worker), so one worker and several take one code path.
"""

import dataclasses
import math

import pyarrow as pa
import pyarrow.parquet as pq

from recjax.errors import DataError

_CHUNK = 1 << 24


@dataclasses.dataclass(frozen=True)
class Piece:
  """A file, or part of it: `span` is a byte range [start, stop) of a CSV (past its header)
  or a range of Parquet row groups; None for the whole file."""
  path: str
  span: tuple[int, int] | None = None


class _Lines:
  """Finds line ends of a file in increasing order, counting quote characters as it goes."""

  def __init__(self, f, quote: bytes):
    self.f, self.quote, self.quotes, self.counted = f, quote, 0, 0

  def _count_to(self, stop: int) -> None:
    self.f.seek(self.counted)
    while self.counted < stop:
      chunk = self.f.read(min(_CHUNK, stop - self.counted))
      if not chunk:
        break
      self.quotes += chunk.count(self.quote)
      self.counted += len(chunk)

  def end_after(self, position: int, size: int) -> int:
    """The offset just past the first newline at or after `position` that is outside quoted
    fields (`size` when there is none)."""
    while position < size:
      self.f.seek(position)
      chunk = self.f.read(_CHUNK)
      newline = chunk.find(b"\n")
      if newline < 0:
        position += len(chunk)
        continue
      end = position + newline + 1
      if not self.quote:
        return end
      self._count_to(end)
      if self.quotes % 2 == 0:
        return end
      position = end
    return size


def csv_spans(path: str, header: bool, quote_char: str, count: int) -> list[tuple[int, int]]:
  """Byte ranges of the data rows of a CSV file, about `count` of them of about equal size,
  each starting at a line."""
  with open(path, "rb") as f:
    size = f.seek(0, 2)
    lines = _Lines(f, quote_char.encode())
    start = lines.end_after(0, size) if header else 0
    cuts = [start]
    for k in range(1, count):
      cut = max(lines.end_after(start + (size - start) * k // count, size), cuts[-1])
      cuts.append(cut)
    cuts.append(size)
  spans = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
  return spans or [(start, start)]


def newlines_before(path: str, offset: int) -> int:
  """Lines that end before byte `offset` (for the line number of a piece's first row)."""
  count = 0
  with open(path, "rb") as f:
    while offset > 0:
      chunk = f.read(min(_CHUNK, offset))
      if not chunk:
        break
      count += chunk.count(b"\n")
      offset -= len(chunk)
  return count


def _parquet_spans(path: str, count: int) -> list[tuple[int, int]]:
  groups = pq.ParquetFile(path).metadata.num_row_groups
  cuts = sorted({groups * k // count for k in range(count + 1)})
  return list(zip(cuts, cuts[1:])) or [(0, 0)]


def plan(files: list[str], data, workers: int) -> list[Piece]:
  """The pieces of `files` for `workers` workers, in source order."""
  blocks = 1 if len(files) >= workers else math.ceil(workers / len(files))
  pieces = []
  for path in files:
    try:
      if data.format == "csv" and not path.endswith(".gz"):
        spans = csv_spans(path, data.header, data.quote_char, blocks)
      elif data.format == "parquet":
        spans = _parquet_spans(path, blocks)
      else:
        spans = [None]
    except (OSError, pa.ArrowException) as e:
      raise DataError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    pieces.extend(Piece(path, span) for span in spans)
  return pieces

"""The replay log's writer: scored requests appended to Parquet parts, off the request path.

A request only appends a reference to a buffer and bumps a counter (`log`); a background
thread turns the buffer into a part when it holds `part_rows` rows or its oldest row is
`flush_seconds` old. A part is written as `.tmp-*` and renamed to `part-<session>-<seq>.parquet`
when complete, so a reader globbing `part-*.parquet` never opens a half-written file, and a
kill leaves at worst a `.tmp-*` that the next writer deletes.

What a kill can lose is the buffer: at most `flush_seconds` of rows (or `part_rows`). It is
counted, not guessed: every `log` also writes the session's running total of accepted rows
into `.<session>.accepted` (one `pwrite` of 20 bytes into the page cache, which a killed
process does not lose). The next writer in the directory compares each dead session's
accepted total with the rows of that session's parts and counts the difference as lost
(`rows_lost`, which the server exports as a metric), then removes the session's file.

A buffer over `max_buffered_rows` (the disk cannot keep up) drops new requests, counted in
`rows_dropped`: a request is never made to wait for the log; a part that cannot be written
(a full disk) is counted in `rows_failed` and the error kept in `error`. Several servers may
share a directory: a live writer holds a lock on its session's file, so a starting one
counts only dead sessions.
"""

import fcntl
import json
import os
import pathlib
import threading
import time
import zlib

import pyarrow.parquet as pq

from recjax.replay import rows as rows_lib

_COUNTER_BYTES = 20


def _yield() -> None:
  time.sleep(0)      # lets a request thread waiting for the GIL take it now


def parts(directory) -> list[pathlib.Path]:
  """The complete parts of a replay directory, oldest session first."""
  return sorted(pathlib.Path(directory).glob("part-*.parquet"))


def sampled(event_id: str, share: float) -> bool:
  """Whether an event is logged at sampling `share`: by a hash of its id, so the same event
  is in or out on every server (and a retried request too)."""
  return share >= 1 or zlib.crc32(event_id.encode()) < share * 2**32


class ReplayWriter:
  """Appends scored requests of one experiment to Parquet parts under `directory`."""

  def __init__(self, directory, spec, log_schema, item_columns, clock=time.time):
    self.directory = pathlib.Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self.spec, self.schema, self.item_columns, self.clock = spec, log_schema, item_columns, clock
    self.rows_logged = self.rows_written = self.rows_dropped = self.rows_failed = 0
    self.parts_written = 0
    self.requests_sampled_out = 0
    self.rows_lost = self.recover()
    self.session = f"{int(clock() * 1000):013d}-{os.getpid()}"
    self._buffer, self._buffered_rows, self._oldest = [], 0, None
    self._sequence = 0
    self._lock = threading.Condition()
    self._closing = False
    self._counter = os.open(self.directory / f".{self.session}.accepted",
                            os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(self._counter, fcntl.LOCK_EX | fcntl.LOCK_NB)
    self._write_counter()
    self.error = None
    self._thread = threading.Thread(target=self._run, name="recjax-replay", daemon=True)
    self._thread.start()

  def recover(self) -> int:
    """Deletes the unfinished parts of dead sessions and counts the rows each accepted but
    never wrote (also appended to `recovered.jsonl`); returns that count."""
    lost = 0
    for counter in sorted(self.directory.glob(".*.accepted")):
      session = counter.name[1:-len(".accepted")]
      with open(counter, "rb") as f:
        try:
          fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          continue                         # a live writer's session
        accepted = int(f.read().strip(b"\0 ").decode() or "0")
      for tmp in self.directory.glob(f".tmp-part-{session}-*"):
        tmp.unlink(missing_ok=True)
      written = sum(pq.ParquetFile(p).metadata.num_rows
                    for p in self.directory.glob(f"part-{session}-*.parquet"))
      record = {"session": session, "accepted": accepted, "written": written,
                "lost": max(accepted - written, 0)}
      with open(self.directory / "recovered.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
      lost += record["lost"]
      counter.unlink()
    return lost

  def log(self, scored, request_id: str, scores) -> bool:
    """Queues one scored request (False: sampled out, or dropped because the buffer is
    full). Never blocks on the disk."""
    if not sampled(scored.event_id, self.spec.sample):
      self.requests_sampled_out += 1
      return False
    request = rows_lib.Request(scored, request_id, int(self.clock() * 1000), scores)
    n = len(scored.item_keys)
    with self._lock:
      if self._buffered_rows + n > self.spec.max_buffered_rows:
        self.rows_dropped += n
        return False
      self._buffer.append(request)
      self._buffered_rows += n
      self.rows_logged += n
      self._write_counter()
      if self._oldest is None:
        self._oldest = time.monotonic()
      if self._buffered_rows >= self.spec.part_rows:
        self._lock.notify()
    return True

  def _write_counter(self) -> None:
    os.pwrite(self._counter, f"{self.rows_logged:0{_COUNTER_BYTES}d}".encode(), 0)

  def _run(self) -> None:
    while True:
      with self._lock:
        while not self._closing and not self._due():
          wait = (self.spec.flush_seconds if self._oldest is None else
                  self._oldest + self.spec.flush_seconds - time.monotonic())
          self._lock.wait(max(wait, 0.001))
        batch, self._buffer, self._buffered_rows, self._oldest = (
            self._buffer, [], 0, None)
        closing = self._closing
      for part in self._parts(batch):
        try:
          self._write(part)
        except Exception as e:      # noqa: BLE001 - a full disk must not stop serving
          self.error = f"{type(e).__name__}: {e}"
          self.rows_failed += sum(len(r.scored.item_keys) for r in part)
      if closing:
        return

  def _due(self) -> bool:
    return self._buffered_rows >= self.spec.part_rows or (
        self._oldest is not None and time.monotonic() - self._oldest >= self.spec.flush_seconds)

  def _parts(self, batch) -> list[list]:
    """The batch cut into parts of whole requests, each closed once it reaches part_rows."""
    parts, current, rows = [], [], 0
    for request in batch:
      current.append(request)
      rows += len(request.scored.item_keys)
      if rows >= self.spec.part_rows:
        parts.append(current)
        current, rows = [], 0
    return parts + ([current] if current else [])

  def _write(self, batch) -> None:
    table = rows_lib.table(batch, self.schema, self.item_columns, between=_yield)
    name = f"part-{self.session}-{self._sequence:06d}.parquet"
    tmp = self.directory / f".tmp-{name}"
    pq.write_table(table, tmp)
    os.replace(tmp, self.directory / name)
    self._sequence += 1
    self.rows_written += table.num_rows
    self.parts_written += 1

  def flush(self, timeout: float = 30.0) -> None:
    """Returns once every row logged so far is written (or failed): tests, the benchmark."""
    with self._lock:
      target = self.rows_logged
      if self._buffer:
        self._oldest = time.monotonic() - self.spec.flush_seconds
        self._lock.notify()
    deadline = time.monotonic() + timeout
    while self.rows_written + self.rows_failed < target:
      if time.monotonic() > deadline:
        raise TimeoutError(f"the replay log did not write {target} rows in {timeout} s")
      time.sleep(0.005)

  def close(self) -> None:
    """Writes the buffer, stops the thread, removes the session's counter (its failures,
    if any, were counted here)."""
    with self._lock:
      self._closing = True
      self._lock.notify()
    self._thread.join()
    (self.directory / f".{self.session}.accepted").unlink(missing_ok=True)
    os.close(self._counter)

  def counts(self) -> dict:
    return {"rows_logged": self.rows_logged, "rows_written": self.rows_written,
            "rows_dropped": self.rows_dropped, "rows_failed": self.rows_failed,
            "rows_lost": self.rows_lost,
            "parts_written": self.parts_written,
            "requests_sampled_out": self.requests_sampled_out}


def directory_of(experiment, workdir) -> pathlib.Path:
  """Where an experiment's replay parts go: `serving.replay.dir`, else `<workdir>/replay`."""
  spec = experiment.serving.replay
  return pathlib.Path(spec.dir) if spec and spec.dir else pathlib.Path(workdir) / "replay"


def open_writer(experiment, workdir, directory=None, clock=time.time) -> ReplayWriter | None:
  """The writer `serving.replay` configures (None when it is not configured), into
  `directory` (default `directory_of`)."""
  spec = experiment.serving.replay
  if spec is None or not spec.enabled:
    return None
  schema = rows_lib.schema(experiment)
  item = experiment.serving.item
  item_columns = [c for c in (item.columns if item else ()) if c in schema.names
                  and c != item.key]
  return ReplayWriter(directory or directory_of(experiment, workdir), spec, schema,
                      item_columns, clock)

"""Loads an entity's Parquet files into Redis as a new version, then flips readers to it.

The steps, each safe to die after:
  1. clean up: drop what an unfinished load left (the versions in `loading`), and set to
     expire the keys of replaced versions a dead load had not yet (those in `retired`);
  2. number a new version and record it in `loading` (one script: no unrecorded version);
  3. write its layout, then every row, pipelined;
  4. flip `current` to it (a script: it must still be in `loading`; the old one moves to
     `retired`) -- a reader sees the old version before this and the new one after;
  5. set the old version's keys to expire after `grace_s`, and forget it.
A load killed before step 4 leaves the serving version untouched, bit for bit, and its own
keys for the next load to delete. Two loads of one entity at once: the later one's step 1
drops the earlier one's version, whose flip then fails with a `StoreError`.

Measured (benchmarks/feature_store.py: 1,000,000 rows of 15 columns into a local Redis, 2
cores shared with other work, so +-30%): MSETs of 500 keys, framed by hiredis, one batch's
commands sent before the previous batch's replies are read (Redis works while Python packs):
280,000-320,000 rows/s. One key per MSET (the cost of pipelined SETs): 90,000-130,000, the
cost per command dominating. One 50,000-key MSET per batch: as fast, but it holds Redis for
one command at a time, and a reader's worst latency during a reload went from ~15 ms to
~150 ms. Framing by redis-py's `pack_commands` (a Python call per argument) instead of by
`hiredis.pack_command` directly: ~80% of the rate.
Deleting and expiring run inside Redis (`SWEEP`, below), so no key travels to Python and
back; setting a replaced version's 1,000,000 keys to expire takes ~3.5 s, after the switch.
"""

import contextlib
import re
import time

import hiredis
import redis

from recjax.errors import ConfigError, DataError
from recjax.serve import layout as layout_lib
from recjax.serve import rows as rows_lib
from recjax.serve.errors import StoreError, StoreUnavailable

BEGIN = """
local version = redis.call('INCR', KEYS[1])
redis.call('SADD', KEYS[2], version)
return version
"""

# KEYS: loading, current, retired; ARGV[1]: the new version. Returns the old one ('' none).
FLIP = """
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return false end
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[1])
if old then redis.call('SADD', KEYS[3], old) end
return old or ''
"""

# ARGV: cursor, pattern, count, milliseconds to expire in ('' deletes). A call holds Redis for
# its SCAN of SWEEP_COUNT slots and the PEXPIREs of the keys found there: ~1,000 slots keep
# each pause to a few milliseconds (10,000 made pauses of 100 ms and more), at no cost in
# total time.
SWEEP_COUNT = 1000
SWEEP = """
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
for _, name in ipairs(found[2]) do
  if ARGV[4] == '' then redis.call('UNLINK', name) else redis.call('PEXPIRE', name, ARGV[4]) end
end
return {found[1], #found[2]}
"""


def load(experiment, entity: str, files=None, url: str | None = None, *,
         batch_rows: int = 50_000, grace_s: float = 60.0, mset_keys: int = 500,
         progress=None) -> dict:
  """Loads `files` (default `serving.<entity>.files`) into the Redis at `url` (default
  `serving.store`) as a new version of `entity` and makes it current. `progress(rows)` is
  called after each batch is sent. Returns a summary: entity, version, previous (None for a
  first load), rows, seconds (until the new version serves) and rows_per_s, then expiring
  (the previous version's keys, set to expire in `grace_s`) and retire_seconds (the time
  that took, after the switch)."""
  layout = layout_lib.layout_of(experiment, entity)
  files = tuple(files or experiment.serving.entities()[entity].files)
  url = url or experiment.serving.store
  if not url:
    raise ConfigError("serving.store: no Redis URL to load into; set it or pass url")
  names = layout_lib.Keys(experiment.serving.namespace, entity)
  client = redis.Redis.from_url(url, socket_timeout=60.0, socket_connect_timeout=5.0)
  start = time.perf_counter()
  with _reaching(url), contextlib.closing(client):
    _drop_unfinished(client, names)
    _retire(client, names, grace_s)
    version, rows, previous = _new_version(client, names, layout, files, batch_rows,
                                           mset_keys, progress)
    serving = time.perf_counter()
    expiring = _retire(client, names, grace_s)
  return {"entity": entity, "version": version, "previous": previous, "rows": rows,
          "seconds": round(serving - start, 3), "rows_per_s": round(rows / (serving - start)),
          "expiring": expiring, "retire_seconds": round(time.perf_counter() - serving, 3)}


def _new_version(client, names, layout, files, batch_rows, mset_keys, progress) -> tuple:
  """Writes a new version and flips `current` to it: (version, rows, previous or None). A
  failure drops what was written (the next load would, if this process dies)."""
  version = str(client.register_script(BEGIN)(keys=[names.serial, names.loading]))
  try:
    client.set(names.layout(version), layout.to_json())
    rows = _write(client, names.prefix(version), rows_lib.batches(layout, files, batch_rows),
                  mset_keys, progress)
    if not rows:
      raise DataError(f"{', '.join(map(str, files))}: no rows to load; the current version "
                      f"of {layout.entity} keeps serving")
    previous = client.register_script(FLIP)(
        keys=[names.loading, names.current, names.retired], args=[version])
  except Exception:
    with contextlib.suppress(redis.RedisError):
      _drop(client, names, version)
    raise
  if previous is None:
    raise StoreError(f"{names.base}{version}: a later load of {layout.entity} dropped this "
                     "version while it was written; that load's version serves")
  return version, rows, previous.decode() or None


@contextlib.contextmanager
def _reaching(url: str):
  try:
    yield
  except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
    raise StoreUnavailable(f"the feature store at {url} did not answer: "
                           f"{type(e).__name__}: {e}") from e
  except redis.ResponseError as e:
    raise StoreError(f"the feature store at {url} refused a write: {e}") from e


def _write(client, prefix: str, batches, mset_keys: int, progress) -> int:
  """Writes every batch as MSETs of `mset_keys` keys on one connection, reading a batch's
  replies only after the next batch is sent (so Redis works while Python packs)."""
  pool = client.connection_pool
  conn, pending, rows = pool.get_connection(), 0, 0
  try:
    for keys, packed in batches:
      flat = [None] * (2 * len(keys))
      flat[::2], flat[1::2] = [prefix + k for k in keys], packed
      step = 2 * mset_keys
      commands = [hiredis.pack_command(("MSET", *flat[i:i + step]))
                  for i in range(0, len(flat), step)]
      conn.send_packed_command(commands)
      _replies(conn, pending)
      pending, rows = len(commands), rows + len(keys)
      if progress is not None:
        progress(rows)
    _replies(conn, pending)
    pending = 0
  finally:
    if pending:
      conn.disconnect()                  # unread replies: the connection is not reusable
    pool.release(conn)
  return rows


def _replies(conn, count: int) -> None:
  for _ in range(count):
    conn.read_response()


def _sweep(client, prefix: str, expire_ms: int | None) -> int:
  """Deletes (`expire_ms` None) or sets to expire every key starting with `prefix`; returns
  how many it found."""
  script = client.register_script(SWEEP)
  pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
  mode = "" if expire_ms is None else str(expire_ms)
  cursor, found = "0", 0
  while True:
    cursor, count = script(args=[cursor, pattern, SWEEP_COUNT, mode])
    found += count
    if cursor in (b"0", "0"):
      return found


def _drop(client, names: layout_lib.Keys, version: str) -> None:
  """Deletes an unfinished version: out of `loading` first, so its flip can no longer run."""
  client.srem(names.loading, version)
  _sweep(client, names.prefix(version), None)
  client.delete(names.layout(version))


def _drop_unfinished(client, names: layout_lib.Keys) -> None:
  for version in client.smembers(names.loading):
    _drop(client, names, version.decode())


def _retire(client, names: layout_lib.Keys, grace_s: float) -> int:
  """Sets every retired version's keys to expire in `grace_s` (so a reader that read the old
  pointer still finds them) and forgets the version; returns how many keys."""
  expire_ms, count = max(1, round(grace_s * 1000)), 0
  for version in client.smembers(names.retired):
    version = version.decode()
    count += _sweep(client, names.prefix(version), expire_ms)
    client.pexpire(names.layout(version), expire_ms)
    client.srem(names.retired, version)
  return count

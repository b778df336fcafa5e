"""The feature store's read side: an entity's raw values by key, for the ranking server.

Two stores with one API, so the server is written once:

  get(entity, keys)          -> (version, [tuple | None, ...])   blocking (loader, tests, tools)
  await aget(entity, keys)   -> the same                         the server's event loop

A tuple holds the entity's `Layout.columns` values in order; None is a key the store does not
hold (the server applies the features' defaults). `version` names the snapshot every value
of the answer came from, so a cache keyed by (version, key) is never stale.

`EmbeddedStore` holds each entity's Parquet `files` in memory (no server to run): values are
kept packed, as in Redis: a third of the memory of tuples of Python values. Its version is
"embedded".

`RedisStore` reads what `loader.load` wrote. One request is one round trip: a Lua script
reads the entity's `current` pointer and MGETs the keys under it, and Redis runs a script
atomically, so an answer never mixes two versions, whenever a load flips the pointer. (Keys
built inside a script are fine on one Redis; a Redis Cluster would need hash tags.) Each new
version an answer comes from is checked once against the config's layout (`LayoutMismatch`).
Failures to reach Redis, or an answer slower than `timeout_s`, raise `StoreUnavailable`.
`put` updates one entity of the current version (real-time features).
"""

import asyncio
import contextlib

import redis
import redis.asyncio

from recjax.serve import layout as layout_lib
from recjax.serve import rows as rows_lib
from recjax.serve.errors import StoreError, StoreUnavailable

# KEYS[1] the entity's current pointer; ARGV[1] the entity's key base, ARGV[2] the keys, each
# followed by a NUL byte (one argument, not one per key: packing 500 arguments costs redis-py
# more than Redis spends on the whole script). MGET in slices: Lua's unpack() is limited to a
# few thousand values.
READ = """
local version = redis.call('GET', KEYS[1])
if not version then return {false, {}} end
local prefix, keys = ARGV[1] .. version .. ':', ARGV[2]
local values, names, start = {}, {}, 1
while start <= #keys do
  local stop = string.find(keys, '\\0', start, true)
  names[#names + 1] = prefix .. string.sub(keys, start, stop - 1)
  start = stop + 1
  if #names == 1000 or start > #keys then
    local got = redis.call('MGET', unpack(names))
    for j = 1, #got do values[#values + 1] = got[j] end
    names = {}
  end
end
return {version, values}
"""
SEPARATOR = "\0"


def _joined(keys) -> str:
  """The keys as READ's one argument; a key holding the separator is refused (no entity
  key of a Parquet file or a request has one)."""
  keys = [str(k) for k in keys]
  joined = SEPARATOR.join(keys) + SEPARATOR if keys else ""
  if joined.count(SEPARATOR) != len(keys):
    bad = next(k for k in keys if SEPARATOR in k)
    raise StoreError(f"key {bad!r} holds a NUL character; entity keys cannot")
  return joined

EMBEDDED = "embedded"
_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError)


def _decode(version, values, count: int) -> tuple[str | None, list]:
  """(version, values) from the wire; before an entity's first load, `count` Nones."""
  if version is None:
    return None, [None] * count
  if isinstance(version, bytes):
    version = version.decode()
  return version, [None if v is None else layout_lib.unpack(v) for v in values]


class EmbeddedStore:
  """Every configured entity's `files`, read once into memory; an entity without files holds
  no keys (every get answers None)."""

  def __init__(self, experiment, batch_rows: int = 50_000):
    self.layouts = layout_lib.layouts(experiment)
    self._values = {}
    for name, spec in experiment.serving.entities().items():
      table = {}
      if spec.files:
        for keys, packed in rows_lib.batches(self.layouts[name], spec.files, batch_rows):
          table.update(zip(keys, packed))
      self._values[name] = table

  def get(self, entity: str, keys) -> tuple[str, list]:
    table = self._values.get(entity)
    if table is None:
      raise StoreError(f"no entity {entity!r}; the store holds {', '.join(self._values)}")
    found = [table.get(str(k)) for k in keys]
    return _decode(EMBEDDED, found, len(found))

  async def aget(self, entity: str, keys) -> tuple[str, list]:
    return self.get(entity, keys)

  def close(self) -> None:
    pass


class RedisStore:
  """Reads (and `put`s) the entities of one namespace of a Redis at `url`."""

  def __init__(self, url: str, namespace: str, layouts: dict, timeout_s: float = 0.05):
    self.url, self.namespace, self.layouts = url, namespace, dict(layouts)
    self.timeout_s = timeout_s
    options = dict(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    self._sync = redis.Redis.from_url(url, **options)
    self._read = self._sync.register_script(READ)
    self._options = options
    self._async = self._async_loop = self._aread = None
    self._checked = set()              # (entity, version) whose layout matched

  def _keys(self, entity: str) -> layout_lib.Keys:
    if entity not in self.layouts:
      raise StoreError(f"no entity {entity!r}; the config serves {', '.join(self.layouts)}")
    return layout_lib.Keys(self.namespace, entity)

  @contextlib.contextmanager
  def _reaching(self):
    try:
      yield
    except _UNAVAILABLE as e:
      raise StoreUnavailable(f"the feature store at {self.url} did not answer: "
                             f"{type(e).__name__}: {e}") from e

  def get(self, entity: str, keys) -> tuple[str | None, list]:
    names = self._keys(entity)
    joined = _joined(keys)
    with self._reaching():
      version, values = self._read(keys=[names.current], args=[names.base, joined])
      version, values = _decode(version, values, len(keys))
      if version is not None and (entity, version) not in self._checked:
        self._check(entity, version, self._sync.get(names.layout(version)))
    return version, values

  async def aget(self, entity: str, keys) -> tuple[str | None, list]:
    names = self._keys(entity)
    client, read = self._async_client()
    joined = _joined(keys)
    with self._reaching():
      version, values = await read(keys=[names.current], args=[names.base, joined])
      version, values = _decode(version, values, len(keys))
      if version is not None and (entity, version) not in self._checked:
        self._check(entity, version, await client.get(names.layout(version)))
    return version, values

  def _async_client(self):
    """The asyncio client of the running loop: a connection serves the loop it was made in,
    so a new loop (a test's `asyncio.run`) gets a new client."""
    loop = asyncio.get_running_loop()
    if self._async_loop is not loop:
      self._async = redis.asyncio.Redis.from_url(self.url, **self._options)
      self._aread, self._async_loop = self._async.register_script(READ), loop
    return self._async, self._aread

  def _check(self, entity: str, version: str, stored) -> None:
    self.layouts[entity].check(stored, f"{self.url} {self.namespace}:{entity} version {version}")
    self._checked.add((entity, version))

  def version(self, entity: str) -> str | None:
    """The entity's current version (None before its first load)."""
    with self._reaching():
      found = self._sync.get(self._keys(entity).current)
    return None if found is None else found.decode()

  def put(self, entity: str, key, values: dict) -> str:
    """Sets some of `key`'s columns in the current version (the others keep their values, or
    None for a new key) and returns that version. Optimistic: WATCH the pointer and the key,
    so a concurrent flip or put makes this retry, never write into a replaced version. A put
    during a load lands in the version being replaced: the load's files win."""
    names, layout = self._keys(entity), self.layouts[entity]
    unknown = sorted(set(values) - set(layout.columns))
    if unknown:
      raise StoreError(f"put {entity} {key!r}: no column {unknown[0]!r}; the {entity} entity "
                       f"stores {', '.join(layout.columns)}")
    index = {c: i for i, c in enumerate(layout.columns)}
    with self._reaching(), self._sync.pipeline() as pipe:
      while True:
        try:
          return self._put_once(pipe, entity, names, str(key), values, index)
        except redis.WatchError:
          continue

  def _put_once(self, pipe, entity, names, key, values, index) -> str:
    layout = self.layouts[entity]
    pipe.watch(names.current)
    version = pipe.get(names.current)
    if version is None:
      raise StoreError(f"put {entity} {key!r}: no version of {names.base[:-1]} is loaded; "
                       "load the entity's files first")
    version = version.decode()
    if (entity, version) not in self._checked:
      self._check(entity, version, pipe.get(names.layout(version)))
    name = names.prefix(version) + key
    pipe.watch(name)
    old = pipe.get(name)
    row = list(layout_lib.unpack(old)) if old is not None else [None] * len(layout.columns)
    for column, value in values.items():
      row[index[column]] = layout.coerce(column, value)
    pipe.multi()
    pipe.set(name, layout_lib.pack(row))
    pipe.execute()
    return version

  def close(self) -> None:
    self._sync.close()

  async def aclose(self) -> None:
    if self._async is not None:
      await self._async.aclose()


def open_store(experiment) -> EmbeddedStore | RedisStore:
  """The store `serving.store` names: Redis at that URL, or the embedded one when empty."""
  serving = experiment.serving
  if not serving.store:
    return EmbeddedStore(experiment)
  return RedisStore(serving.store, serving.namespace, layout_lib.layouts(experiment),
                    serving.store_timeout_ms / 1000)

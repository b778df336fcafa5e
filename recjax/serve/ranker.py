"""The `:rank` endpoint's work: one user, N candidate items, scored in one model call.

A request gives the user's key (and, when the engine fetched them, its features), the
candidates' keys and the request context. The service fetches what it lacks in one batched
call per entity (the user's only when the caller did not send them: a fallback fetch,
counted), takes items through an in-process LRU cache, fills what is missing with each
column's default (counted by reason), and calls the model's `rank` signature once: the
user's side is computed once and broadcast over the N items (`export.ranking`). A store that
is down or slower than `serving.store_timeout_ms` costs defaults and a counter, never a
failed request. The answer: the items sorted by score, the model version and an event id;
`Scored` keeps every raw value the model read, for the replay log.
"""

import asyncio
import collections
import dataclasses
import time
import uuid

import numpy as np

from recjax.export import ranking
from recjax.export import saved_model
from recjax.serve import defaults
from recjax.serve import rest
from recjax.serve.errors import StoreError, StoreUnavailable
from recjax.serve.rest import BadRequest

REQUEST_FIELDS = {"user", "items", "context", "top_k", "event_id", "request_id"}


class ItemCache:
  """An LRU of item key -> raw values, all of one store version: a store answer of another
  version (a load switched it) empties it, so one request never mixes two versions. The
  service asks the store at least every `serving.poll_seconds`, so a switch is seen then
  even by requests whose items are all cached."""

  def __init__(self, size: int):
    self.size, self.version = size, None
    self._entries = collections.OrderedDict()

  def get(self, key):
    value = self._entries.get(key)
    if value is not None:
      self._entries.move_to_end(key)
    return value

  def put(self, version, items: dict) -> None:
    if version != self.version:
      self._entries.clear()
      self.version = version
    if not self.size:
      return
    self._entries.update(items)
    for key in items:
      self._entries.move_to_end(key)
    while len(self._entries) > self.size:
      self._entries.popitem(last=False)


@dataclasses.dataclass
class Scored:
  """One ranking: what the model read (raw columns, one-row ones of length 1), which values
  were defaulted ({column: reason} for the one-row side, item index -> reason), the scores."""
  event_id: str
  version: int
  user_key: str
  item_keys: list
  columns: dict
  defaulted_user: dict
  defaulted_items: dict
  scores: dict


class RankService:
  """A rank request's work for one experiment: `parse` (checks, 400s), `score` (the fetches
  and the one model call), `answer` (the JSON). It is given its store, versions, metrics
  and an executor for the model call (TF releases the GIL: the event loop goes on)."""

  def __init__(self, experiment, store, versions, metrics, executor):
    serving = experiment.serving
    if serving.item is None or not serving.item.columns:
      raise ValueError("ranking needs serving.item with columns")
    self.serving, self.store, self.versions = serving, store, versions
    self.metrics, self.executor = metrics, executor
    self.one_row, _ = ranking.sides(experiment)
    self.inputs = saved_model.serving_inputs(experiment)
    self.numeric = {c for c, s in self.inputs.items() if s.dtype.name == "float32"}
    self.defaults = defaults.of(experiment)
    self.user_columns = serving.user.columns if serving.user else ()
    self.context_columns = tuple(sorted(self.one_row - set(self.user_columns)))
    self.item_columns = serving.item.columns
    # a missing item's raw values: the defaults, with its own key where the key is a column
    self._default_item = tuple(self.defaults[c] for c in self.item_columns)
    self._item_key_index = (self.item_columns.index(serving.item.key)
                            if serving.item.key in self.item_columns else None)
    self.cache = ItemCache(serving.cache_items)
    self._asked_at = 0.0      # when the store last answered for items (see `_items`)
    self.timeout_s = serving.store_timeout_ms / 1000

  def parse(self, body) -> dict:
    """The request's fields, checked; BadRequest names the first bad one."""
    if not isinstance(body, dict):
      raise BadRequest("the request body is not a JSON object")
    unknown = sorted(set(body) - REQUEST_FIELDS)
    if unknown:
      raise BadRequest(f"unknown field {unknown[0]!r}; a rank request has "
                       f"{', '.join(sorted(REQUEST_FIELDS))}")
    user = body.get("user")
    if not isinstance(user, dict) or isinstance(user.get("key"), bool) or not isinstance(
        user.get("key"), (str, int)) or "\0" in str(user["key"]):
      raise BadRequest("user: expected {\"key\": ..., \"features\": {...} (optional)}")
    features = self._values(user.get("features") or {}, self.user_columns, "user.features")
    context = self._values(body.get("context") or {}, self.context_columns, "context")
    items = body.get("items")
    if not isinstance(items, list) or not items:
      raise BadRequest("items: expected a non-empty list of item keys")
    if len(items) > self.serving.max_candidates:
      raise BadRequest(f"items: {len(items)} candidates; the limit is "
                       f"{self.serving.max_candidates} (serving.max_candidates)")
    for i, key in enumerate(items):
      if isinstance(key, bool) or not isinstance(key, (str, int)) or "\0" in str(key):
        raise BadRequest(f"items[{i}]: an item key is a string (with no NUL character) or "
                         f"an integer, got {key!r}")
    top_k = body.get("top_k", len(items))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
      raise BadRequest(f"top_k: expected a positive integer, got {top_k!r}")
    event_id = body.get("event_id") or uuid.uuid4().hex
    if not isinstance(event_id, str):
      raise BadRequest(f"event_id: expected a string, got {event_id!r}")
    request_id = body.get("request_id") or event_id
    if not isinstance(request_id, str):
      raise BadRequest(f"request_id: expected a string, got {request_id!r}")
    return {"user_key": str(user["key"]), "user": features, "context": context,
            "items": [str(k) for k in items], "top_k": top_k, "event_id": event_id,
            "request_id": request_id}

  def _values(self, values, allowed, field: str) -> dict:
    """Raw values of `allowed` columns, checked: a number for a numeric column; a string,
    or an integer read as its decimal string (as the training reader reads a Parquet int
    column into a string feature), for the others."""
    if not isinstance(values, dict):
      raise BadRequest(f"{field}: expected an object of raw columns")
    out = {}
    for column, value in values.items():
      if column not in allowed:
        raise BadRequest(f"{field}: unknown column {column!r}; "
                         f"expected some of {', '.join(allowed) or '(none)'}")
      numeric = column in self.numeric
      if isinstance(value, bool) or not isinstance(value, (int, float) if numeric else (str, int)):
        raise BadRequest(f"{field}.{column}: expected a {'number' if numeric else 'string'}, "
                         f"got {value!r}")
      out[column] = value if numeric or isinstance(value, str) else str(value)
    return out

  async def _fetch(self, entity: str, keys: list) -> tuple:
    """(version, values per key, reason a missing one gets) from the store within the
    timeout. Down or slow: no values, "store_unavailable" and a counter. A store whose
    layout differs from the config's (`LayoutMismatch`) is not caught: that is a deployment
    fault, answered 503 with its message, not hidden behind defaults."""
    try:
      version, values = await asyncio.wait_for(self.store.aget(entity, keys), self.timeout_s)
      return version, values, "missing_entity"
    except (StoreUnavailable, asyncio.TimeoutError, OSError):
      self.metrics.store_errors.inc()
      return None, [None] * len(keys), "store_unavailable"

  async def _user(self, request) -> tuple[dict, dict]:
    """The user's raw values and {column: reason} of those defaulted."""
    given = dict(request["user"])
    key = self.serving.user.key if self.serving.user else None
    if key in self.user_columns:
      given[key] = request["user_key"]       # the key column is the request's user key
    if set(given) >= set(self.user_columns):
      return given, {}
    self.metrics.fallback_fetches.inc()
    _, (values,), reason = await self._fetch("user", [request["user_key"]])
    if values is not None:
      given = {**dict(zip(self.user_columns, values)), **given}
    defaulted = {}
    for column in self.user_columns:
      if column not in given:
        given[column], defaulted[column] = self.defaults[column], reason
    return given, defaulted

  async def _items(self, keys: list) -> tuple[list, dict]:
    """Each item's raw values (tuples in item column order) and {index: reason} of items
    served with defaults."""
    values = [self.cache.get(k) for k in keys]
    misses = sorted({k for k, v in zip(keys, values) if v is None})
    self.metrics.cache.labels("hit").inc(len(keys) - len(misses))
    self.metrics.cache.labels("miss").inc(len(misses))
    if not misses and time.monotonic() - self._asked_at > self.serving.poll_seconds:
      misses = [keys[0]]    # all cached: ask for one anyway, to see a version switch soon
    reason = "missing_entity"
    if misses:
      version, fetched, reason = await self._fetch("item", misses)
      if version is not None and self.cache.version not in (None, version):
        # the store switched versions: refetch all, so the request is of one version
        misses = sorted(set(keys))
        version, fetched, reason = await self._fetch("item", misses)
        values = [None] * len(keys)
      found = {k: v for k, v in zip(misses, fetched) if v is not None}
      if reason != "store_unavailable":
        self.cache.put(version, found)
        self._asked_at = time.monotonic()
      values = [v if v is not None else found.get(k) for k, v in zip(keys, values)]
    missing = {i: reason for i, v in enumerate(values) if v is None}
    for i in missing:
      row = list(self._default_item)
      if self._item_key_index is not None:
        row[self._item_key_index] = keys[i]
      values[i] = tuple(row)
    return values, missing

  def _columns(self, request, user: dict, items: list) -> tuple[dict, dict]:
    """The rank signature's raw columns, and {context column: reason} of defaulted ones."""
    columns, defaulted = {}, {}
    for column in self.one_row:
      if column in user:
        value = user[column]
      elif column in request["context"]:
        value = request["context"][column]
      else:
        value, defaulted[column] = self.defaults[column], "missing_context"
      columns[column] = [value]
    for column, values in zip(self.item_columns, zip(*items)):    # rows -> columns, in C
      if column in self.inputs:
        columns[column] = values
    # numbers as float32 arrays, strings as sequences (converted faster than object arrays)
    return {c: np.asarray(v, np.float32) if c in self.numeric else v
            for c, v in columns.items()}, defaulted

  async def score(self, request) -> Scored:
    loaded = self.versions.current
    if loaded is None or ranking.SIGNATURE not in loaded.signatures:
      raise StoreError("no model version with a rank signature is loaded yet")
    (user, defaulted_user), (items, defaulted_items) = await asyncio.gather(
        self._user(request), self._items(request["items"]))
    columns, defaulted_context = self._columns(request, user, items)
    defaulted_user |= defaulted_context
    for reason in [*defaulted_user.values(), *defaulted_items.values()]:
      self.metrics.defaulted.labels(reason).inc()
    rank = loaded.signatures[ranking.SIGNATURE]
    self.versions.record(ranking.SIGNATURE, len(items))
    outputs = await asyncio.get_running_loop().run_in_executor(
        self.executor, rest.call, rank, columns)
    self.metrics.candidates.inc(len(items))
    return Scored(request["event_id"], loaded.version, request["user_key"], request["items"],
                  columns, defaulted_user, defaulted_items, outputs)

  @staticmethod
  def ranking_scores(scored: Scored) -> np.ndarray:
    """The score items are ranked by: the first binary output, else the first output."""
    name = saved_model.OUTPUT if saved_model.OUTPUT in scored.scores else next(
        iter(sorted(scored.scores)))
    return np.asarray(scored.scores[name]).reshape(len(scored.item_keys), -1)[:, 0]

  def answer(self, request, scored: Scored, scores: np.ndarray) -> dict:
    """Items by descending `scores` (`ranking_scores`), top_k of them."""
    order = np.argsort(-scores, kind="stable")[: request["top_k"]]
    return {"model_version": str(scored.version), "event_id": scored.event_id,
            "items": [{"key": scored.item_keys[i], "score": float(scores[i])} for i in order],
            "defaulted": {
                "user": sorted(c for c in scored.defaulted_user if c in self.user_columns),
                "context": sorted(c for c in scored.defaulted_user if c not in self.user_columns),
                "items": len(scored.defaulted_items)}}


"""Retrieval evaluation of two-tower models: embed the item corpus, embed the eval users,
brute-force top-k on device, and score HR@k / NDCG@k against sampled candidates and
recall@k over the full corpus.

A two-tower model (DSSM, SASRec) has `user` and `item` methods and says which groups each
reads (`tower_inputs`). The corpus is a file of items (the item tower's columns and an
`item_key` column naming each item); every item is embedded once, in fixed-size jitted
batches. Each eval row (the user tower's columns, the target's key, and optionally a column
of sampled candidate keys and one of the keys the user has already seen) is embedded by the
user tower; its scores are dot products with the item vectors.

- Sampled candidates (the SASRec / NCF protocol): scores of [target, candidates...] ->
  `metrics.ranking_metrics` (HR@k, NDCG@k; ties count half, see metrics).
- Full corpus: the top k of user @ items.T in blocks of users (`jax.lax.top_k`), the items
  the user has seen in training masked out first (the usual protocol: re-recommending a
  watched movie is neither a hit nor a miss; the target itself is never masked) ->
  `metrics.retrieval_metrics` (recall@k, and NDCG@k reported as full_ndcg@k).

Everything heavy (lookup, towers, scoring, top-k) runs on the default device; the host only
turns keys into corpus rows. `dump` writes the corpus's vectors for a nearest-neighbour index.
"""

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from recjax.embedding import tables as embedding
from recjax.features import spec as features_lib
from recjax.input import pipeline as input_lib
from recjax.tasks import metrics as metrics_lib
from recjax.input import readers
from recjax.errors import ConfigError, DataError, RecjaxError

USER, ITEM = "user", "item"


@dataclasses.dataclass(frozen=True)
class RetrievalSpec:
  """How a retrieval task is evaluated (the keys of its `retrieval` options)."""
  corpus: tuple[str, ...] = ()      # files of every item: the item tower's columns + item_key
  item_key: str = ""                # the column naming an item, in the corpus and eval rows
  candidates: str = ""              # eval column of sampled candidate keys ("a|b|c"), or ""
  seen: str = ""                    # eval column of keys to exclude from full retrieval, or ""
  separator: str = "|"
  sampled_ks: tuple[int, ...] = (10,)
  full_ks: tuple[int, ...] = (50,)  # () skips full-corpus retrieval
  user_block: int = 1024            # users per top-k block

  def __post_init__(self):
    if not self.corpus or not self.item_key:
      raise ConfigError("retrieval: corpus (files of items) and item_key (the column naming an "
                        "item) are required")
    if any(k < 1 for k in self.sampled_ks + self.full_ks):
      raise ConfigError("retrieval: every k must be at least 1")


def tower_parts(experiment, tower: str):
  """(features, plans, reads dense) of one tower, from the model's `tower_inputs`."""
  groups, use_dense = experiment.model.tower_inputs(tower)
  known = {g.name: g for g in experiment.groups}
  for name in groups:
    if name not in known:
      raise ConfigError(f"model: the {tower} tower reads group {name!r}, which is not in "
                        f"groups ({', '.join(known)})")
  names = {f for name in groups for f in known[name].features}
  features = tuple(f for f in experiment.features
                   if f.name in names or (use_dense and f.output == "dense"))
  plans = experiment.embedding_plan.groups
  return features, tuple(p for p in plans if p.name in groups), use_dense


def _tower_step(experiment, tower: str):
  method = getattr(type(experiment.model), tower)
  # every group is looked up (a tower's group may read a table owned by a group of the other
  # tower: `tables_from`); the features the tower does not read get padding ids
  plans = experiment.embedding_plan.groups

  @jax.jit
  def step(params, tables, ids, weights, dense):
    embedded = embedding.lookup(tables, plans, ids, weights)
    return experiment.model.apply({"params": params}, embedded, dense, method=method)
  return step


def embed(experiment, state, tower: str, columns: dict, batch_size: int,
          where=lambda row: f"row {row}") -> jax.Array:
  """Raw columns of N rows -> the tower's vectors [N, D] on device, in fixed-size batches."""
  features, _, _ = tower_parts(experiment, tower)
  arrays = features_lib.transform(features, columns, where)
  n = len(arrays["dense"])
  for f in features_lib.id_features(experiment.features):
    if f.name not in arrays["ids"]:
      arrays["ids"][f.name] = np.zeros((n, f.length), np.int32)
      arrays["weights"][f.name] = np.zeros((n, f.length), np.float32)
  split = input_lib.Split(arrays, ())
  step = _tower_step(experiment, tower)
  out = []
  for batch in input_lib.eval_batches(split, batch_size):
    n = int(batch.pop("mask").sum())
    out.append(step(state.params, state.tables, batch["ids"], batch["weights"],
                    batch["dense"])[:n])
  return jnp.concatenate(out)


def _read(files, data, columns) -> tuple[dict, Callable[[int], str]]:
  """The raw columns of every file (all strings), and where(row) naming a row's file/line."""
  parts, wheres, starts = [], [], [0]
  for path in input_lib.resolve_files(files, "retrieval"):
    read = readers.read(path, data, list(columns), set())
    if read.problems:
      problem = read.problems[0]
      raise DataError(problem.message(int(np.argmax(problem.mask))))
    parts.append(read.columns)
    wheres.append(read.where)
    starts.append(starts[-1] + read.rows)
  merged = {c: np.concatenate([p[c] for p in parts]) for c in columns}

  def where(row):
    part = int(np.searchsorted(starts, row, side="right") - 1)
    return wheres[part](row - starts[part])
  return merged, where


def _rows_of(keys, index: dict, where, column: str, separator: str = "") -> list:
  """Keys (or separator-joined lists of keys) -> corpus rows; an unknown key names its row."""
  out = []
  for row, value in enumerate(keys):
    parts = [v for v in value.split(separator) if v] if separator else [value]
    try:
      out.append([index[k] for k in parts] if separator else index[value])
    except KeyError as e:
      raise DataError(f"{where(row)}: column {column!r} names item {e.args[0]!r}, which is not "
                      "in the retrieval corpus") from None
  return out


@functools.partial(jax.jit, static_argnames="k")
def _top_k_block(users, items, exclude, k: int):
  scores = users @ items.T                                                     # [b, N]
  rows = jnp.arange(users.shape[0])[:, None]
  scores = scores.at[rows, exclude].set(-jnp.inf, mode="drop")        # index N: nothing
  return jax.lax.top_k(scores, k)


def top_k(users: jax.Array, items: jax.Array, k: int, exclude: np.ndarray | None = None,
          block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Brute-force maximum inner product search: (scores, item rows) [N, k], best first, of
  users [N, D] against items [M, D]; `exclude` [N, S] holds item rows to leave out per user
  (padded with M). Users go in blocks of `block` rows so that a [block, M] score matrix is
  the most that exists at once."""
  n, m = users.shape[0], items.shape[0]
  if not 1 <= k <= m:
    raise ValueError(f"k = {k} is not in 1..{m} (the corpus size)")
  if exclude is None:
    exclude = np.full((n, 1), m, np.int32)
  block = min(block, n)
  scores, ids = [], []
  for start in range(0, n, block):
    u, e = users[start:start + block], exclude[start:start + block]
    pad = block - u.shape[0]
    if pad:          # one compiled shape for every block
      u = jnp.concatenate([u, jnp.zeros((pad, u.shape[1]), u.dtype)])
      e = np.concatenate([e, np.full((pad, e.shape[1]), m, e.dtype)])
    s, i = _top_k_block(u, items, jnp.asarray(e), k)
    scores.append(np.asarray(s)[:block - pad])
    ids.append(np.asarray(i)[:block - pad])
  return np.concatenate(scores), np.concatenate(ids)


def _pad_rows(lists: list, fill: int) -> np.ndarray:
  width = max([len(x) for x in lists] + [1])
  out = np.full((len(lists), width), fill, np.int32)
  for i, x in enumerate(lists):
    out[i, :len(x)] = x
  return out


def item_vectors(experiment, state, spec: RetrievalSpec) -> tuple[np.ndarray, jax.Array]:
  """The corpus (files read with `data`'s format options) through the item tower: its keys
  [M] and vectors [M, D] (on device); a key given twice is an error naming both rows."""
  item_features, _, _ = tower_parts(experiment, ITEM)
  item_columns = {c for f in item_features for c in f.columns} | {spec.item_key}
  corpus, where = _read(spec.corpus, experiment.data, sorted(item_columns))
  keys = corpus[spec.item_key]
  first = {}
  for row, key in enumerate(keys):
    if first.setdefault(key, row) != row:
      raise DataError(f"{where(row)}: item {key!r} is in the retrieval corpus twice "
                      f"(first at {where(first[key])})")
  return keys, embed(experiment, state, ITEM, corpus, experiment.train.eval_batch_size, where)


def dump(experiment, state, spec: RetrievalSpec, path) -> None:
  """The item-embedding dump for a nearest-neighbour index: an .npz of `keys` [M] (str) and
  `vectors` [M, D] (float32)."""
  keys, vectors = item_vectors(experiment, state, spec)
  np.savez(path, keys=np.asarray(keys, str), vectors=np.asarray(vectors, np.float32))


def evaluate(experiment, state, spec: RetrievalSpec, eval_files=None) -> dict:
  """HR@k / NDCG@k over [target + sampled candidates] and recall@k / NDCG@k over the full
  corpus for every row of the eval split (`data.eval`, or `eval_files`)."""
  data, batch_size = experiment.data, experiment.train.eval_batch_size
  keys, items = item_vectors(experiment, state, spec)                        # [M], [M, D]
  index = {key: row for row, key in enumerate(keys)}

  user_features, _, _ = tower_parts(experiment, USER)
  extra = [c for c in (spec.item_key, spec.candidates, spec.seen) if c]
  columns, where = _read(eval_files or data.eval, data,
                         sorted({c for f in user_features for c in f.columns} | set(extra)))
  users = embed(experiment, state, USER, columns, batch_size, where)          # [N, D]
  targets = np.asarray(_rows_of(columns[spec.item_key], index, where, spec.item_key), np.int32)
  out = {"examples": int(len(targets)), "corpus": int(len(keys))}

  if spec.candidates:
    candidates = _rows_of(columns[spec.candidates], index, where, spec.candidates,
                          spec.separator)
    widths = {len(c) for c in candidates}
    if len(widths) != 1:
      row = next(i for i, c in enumerate(candidates) if len(c) != len(candidates[0]))
      raise DataError(f"{where(row)}: column {spec.candidates!r} holds {len(candidates[row])} "
                      f"candidates, the first row {len(candidates[0])}; every row needs as many")
    rows = jnp.asarray(np.concatenate([targets[:, None], np.asarray(candidates, np.int32)], 1))
    scores = jax.jit(lambda u, v, r: jnp.einsum("nd,ncd->nc", u, v[r]))(users, items, rows)
    out |= metrics_lib.ranking_metrics(np.asarray(scores), spec.sampled_ks)

  if spec.full_ks:
    exclude = None
    if spec.seen:
      seen = _rows_of(columns[spec.seen], index, where, spec.seen, spec.separator)
      exclude = _pad_rows(seen, len(keys))
      exclude[exclude == targets[:, None]] = len(keys)          # never hide the target itself
    _, top = top_k(users, items, max(spec.full_ks), exclude, spec.user_block)
    full = metrics_lib.retrieval_metrics(top, targets, spec.full_ks)
    # "ndcg@k" names the sampled-candidate figure; the full-corpus one is told apart
    out |= {(f"full_{name}" if name.startswith("ndcg") else name): value
            for name, value in full.items()}
  return out


def evaluate_tasks(experiment, state) -> dict:
  """The retrieval metrics of every retrieval task that has `retrieval` options (keys as
  `tasks.evaluate` names them: flat for one task, `<task>/<metric>` for several). The
  corpus and the eval rows are read and embedded in this process (one-process runs)."""
  out = {}
  for task in experiment.tasks:
    if task.kind.retrieval and task.retrieval is not None:
      if jax.process_count() > 1:
        raise RecjaxError(f"tasks.{task.name}.retrieval: retrieval evaluation runs in one "
                          "process; evaluate the checkpoint with `recjax evaluate` on one host")
      prefix = "" if len(experiment.tasks) == 1 else f"{task.name}/"
      out |= {f"{prefix}{k}": v for k, v in evaluate(experiment, state, task.retrieval).items()}
  return out

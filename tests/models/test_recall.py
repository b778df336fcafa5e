"""Tests for the recall models (DSSM, SASRec), recjax.tasks.retrieval, recjax.export.towers and the
MovieLens leave-one-out files.

The models against their definitions on random inputs (towers independent, SASRec blind to
padding and to the future); brute-force top-k against numpy; the leave-one-out files against
the raw ratings; and each model's config trained 3 steps on a few hundred MovieLens rows,
evaluated (its metrics recomputed from the exported towers' vectors with numpy), with the
whole model's SavedModel (the pair's score) equal to JAX's predictions and the user and item
SavedModels equal to JAX's towers.
"""

import csv
import gzip

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.embedding import tables as embedding
from recjax.export import saved_model as export
from recjax.export import writes
from recjax.input import labels
from recjax.input import pipeline as input_lib
from recjax.tasks import losses
from recjax.tasks import metrics as metrics_lib
from recjax.datasets import movielens
from recjax.tasks import retrieval
from recjax import sharding
from recjax.tasks import spec as tasks
from recjax.export import towers as tower_export
from recjax.train import loop as train
from recjax.errors import ConfigError
from recjax.models import TINY
from recjax.models import dssm
from recjax.models import sasrec
from tests.conftest import ROOT

B, L, D = 4, 6, 8
HAVE_MOVIELENS = (movielens.SOURCE / movielens.RATINGS).exists()
needs_movielens = pytest.mark.skipif(
    not HAVE_MOVIELENS, reason=f"MovieLens-1M not found at {movielens.SOURCE} (../shared/data)")


def _normal(seed, *shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ---- models ---------------------------------------------------------------------------------

def _dssm_inputs(seed):
  mask = jnp.asarray(np.arange(L)[None] < np.array([[3], [6], [1], [0]]), jnp.float32)
  embedded = {"user": _normal(seed, B, 2, D), "item": _normal(seed + 1, B, 3, D),
              "watched": _normal(seed + 2, B, 1, L, D) * mask[:, None, :, None],
              "watched" + embedding.MASK: mask}
  return embedded, _normal(seed + 3, B, 2)


def test_dssm_towers_are_independent_and_score_is_their_dot_product():
  model = dssm.DSSM(user_groups=("user", "watched"), item_groups=("item",), hidden=(16,), dim=5)
  embedded, dense = _dssm_inputs(0)
  params = model.init(jax.random.key(0), embedded, dense)
  out = model.apply(params, embedded, dense)
  assert out["user"].shape == out["item"].shape == (B, 5)
  np.testing.assert_allclose(jnp.linalg.norm(out["user"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(out["match"], jnp.sum(out["user"] * out["item"], -1), rtol=1e-5)
  # the user tower does not read the item group, the item tower neither the user groups nor dense
  other = {**embedded, "item": _normal(9, B, 3, D)}
  np.testing.assert_array_equal(model.apply(params, other, dense)["user"], out["user"])
  other = {**embedded, "user": _normal(9, B, 2, D)}
  np.testing.assert_array_equal(
      model.apply(params, other, dense * 2)["item"], out["item"])
  np.testing.assert_array_equal(model.apply(params, embedded, dense, method="user"), out["user"])


def test_dssm_mean_pools_a_sequence_group_over_its_real_positions():
  embedded, dense = _dssm_inputs(1)
  x = dssm.tower_input(embedded, dense, ("watched",), use_dense=True)
  mask = embedded["watched_mask"]
  expected = embedded["watched"][:, 0].sum(1) / jnp.maximum(mask.sum(-1), 1)[:, None]
  np.testing.assert_allclose(x[:, :D], expected, rtol=1e-6)
  np.testing.assert_array_equal(x[:, D:], dense)


def _sasrec_inputs(seed, counts=(3, 6, 1, 2)):
  mask = jnp.asarray(np.arange(L)[None] < np.array(counts)[:, None], jnp.float32)
  return {"history": _normal(seed, B, 1, L, D) * mask[:, None, :, None],
          "history" + embedding.MASK: mask, "item": _normal(seed + 1, B, 1, D)}, mask


def test_sasrec_ignores_padding_and_reads_the_last_real_position():
  model = sasrec.SASRec(num_blocks=2, num_heads=2)
  embedded, mask = _sasrec_inputs(0)
  params = jax.jit(model.init)(jax.random.key(0), embedded, jnp.zeros((B, 0)))
  apply = jax.jit(lambda e: model.apply(params, e, None))
  out = apply(embedded)
  assert out["user"].shape == (B, D)
  np.testing.assert_array_equal(out["item"], embedded["item"][:, 0])  # the item embedding itself
  np.testing.assert_allclose(out["next_item"], jnp.sum(out["user"] * out["item"], -1), rtol=1e-5)
  # garbage at padded positions changes nothing
  noisy = {**embedded, "history": embedded["history"]
           + _normal(5, B, 1, L, D) * (1 - mask)[:, None, :, None]}
  np.testing.assert_allclose(apply(noisy)["user"], out["user"], atol=1e-6)
  # every real position matters, the most recent one too
  for position in (0, 2):
    changed = embedded["history"].at[0, 0, position].add(_normal(6, D))
    moved = apply({**embedded, "history": changed})["user"]
    assert float(jnp.abs(moved[0] - out["user"][0]).max()) > 1e-3
    np.testing.assert_allclose(moved[1:], out["user"][1:], atol=1e-6)


def test_sasrec_attention_is_causal():
  # A row read at position t (its mask cut after t) is blind to what lies after t.
  encoder = sasrec.SequenceEncoder(num_blocks=2, num_heads=1, ffn_dim=8)
  x = _normal(3, 1, L, D)
  params = jax.jit(encoder.init)(jax.random.key(1), x, jnp.ones((1, L)))
  apply = jax.jit(lambda x, mask: encoder.apply(params, x, mask))
  count = 4
  cut = (jnp.arange(L) < count).astype(jnp.float32)[None]
  later = x.at[0, count:].add(_normal(4, L - count, D))
  np.testing.assert_allclose(apply(later, cut), apply(x, cut), atol=1e-6)
  # ... while the causal blocks let position t read the earlier positions
  earlier = x.at[0, 0].add(_normal(5, D))
  assert float(jnp.abs(apply(earlier, cut) - apply(x, cut)).max()) > 1e-3


def test_sasrec_rejects_a_pooled_history():
  model = sasrec.SASRec()
  with pytest.raises(ValueError, match="must be a sequence group"):
    model.init(jax.random.key(0), {"history": jnp.zeros((B, 1, D)), "item": jnp.zeros((B, 1, D))},
               None)


# ---- brute-force top-k ----------------------------------------------------------------------

def test_top_k_in_blocks_equals_numpy_with_exclusions():
  rng = np.random.default_rng(0)
  users, items = rng.normal(size=(23, 5)), rng.normal(size=(40, 5))
  exclude = np.full((23, 3), 40, np.int32)
  exclude[:, 0] = rng.integers(0, 40, 23)
  exclude[5, :] = [1, 2, 3]
  scores, ids = retrieval.top_k(jnp.asarray(users, jnp.float32), jnp.asarray(items, jnp.float32),
                                7, exclude, block=8)
  full = users @ items.T
  for i in range(23):
    full[i, exclude[i][exclude[i] < 40]] = -np.inf
  expected = np.argsort(-full, axis=1, kind="stable")[:, :7]
  np.testing.assert_array_equal(ids, expected)
  np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-5)
  assert not np.isin(ids[5], [1, 2, 3]).any()
  with pytest.raises(ValueError, match="not in 1..40"):
    retrieval.top_k(jnp.asarray(users), jnp.asarray(items), 41)


# ---- MovieLens leave-one-out files ----------------------------------------------------------

def _raw_sequences(users: int):
  rows = {}
  with gzip.open(movielens.SOURCE / movielens.RATINGS, "rt", encoding="latin-1") as f:
    for line in f:
      user, movie, _, time = line.strip().split("::")
      if user not in rows and len(rows) == users:
        break
      rows.setdefault(user, []).append((int(time), movie))
  return {u: [m for _, m in sorted(r, key=lambda p: p[0])] for u, r in rows.items()}


def _csv(path):
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


@needs_movielens
def test_movielens_leave_one_out_files(tmp_path):
  paths = movielens.prepare(tmp_path, max_len=5, num_negatives=20, max_users=6)
  sequences = _raw_sequences(6)
  train, evals = _csv(paths["train.csv"]), _csv(paths["eval.csv"])
  movies = [r["movie_id"] for r in _csv(paths["items.csv"])]
  assert len(movies) == 3883 and set(movies) <= set(movielens.MOVIE_IDS)
  assert len(train) == sum(len(s) - 2 for s in sequences.values())
  assert [e["user_id"] for e in evals] == list(sequences)
  for row in evals:
    items = sequences[row["user_id"]]
    assert row["movie_id"] == items[-1]                             # the last item is the test
    assert row["history"].split("|") == items[-6:-1]                # the 5 items before it
    assert row["seen"].split("|") == items[:-1]
    negatives = row["negatives"].split("|")
    assert len(set(negatives)) == 20 and not set(negatives) & set(items)
  first = [r for r in train if r["user_id"] == evals[0]["user_id"]]
  items = sequences[evals[0]["user_id"]]
  assert [r["movie_id"] for r in first] == items[1:-1]              # one row per next item
  assert first[0]["history"] == items[0] and first[9]["history"].split("|") == items[5:10]
  assert first[0]["gender"] == "F" and first[0]["genres"] and first[0]["year"].isdigit()
  # the same parameters again: nothing is rewritten; another seed: other negatives
  stamp = (tmp_path / "eval.csv").stat().st_mtime_ns
  movielens.prepare(tmp_path, max_len=5, num_negatives=20, max_users=6)
  assert (tmp_path / "eval.csv").stat().st_mtime_ns == stamp
  movielens.prepare(tmp_path, max_len=5, num_negatives=20, max_users=6, seed=1)
  assert _csv(paths["eval.csv"])[0]["negatives"] != evals[0]["negatives"]


# ---- retrieval task kinds -------------------------------------------------------------------

def test_log_q_is_the_log_frequency_of_each_rows_item():
  q = labels.log_q(np.array(["a", "b", "a", "c", "a", "b"], object))
  np.testing.assert_allclose(q, np.log([3, 2, 3, 1, 3, 2]) - np.log(6), rtol=1e-6)


def _retrieval_task(loss="in_batch_softmax", **extra):
  extra.setdefault("label", "item" if loss == "in_batch_softmax" else "")
  return tasks.TaskSpec("match", loss=loss, item_feature="item_id", temperature=0.5, **extra)


def test_in_batch_softmax_kind_reads_user_item_ids_log_q_and_weights():
  task = _retrieval_task()
  u, v = _normal(0, B, D), _normal(1, B, D)
  ids = jnp.array([[3], [5], [3], [7]])
  batch = {"ids": {"item_id": ids}, "labels": {"match": _normal(2, B)},
           "loss_weights": {"match": jnp.array([1.0, 1.0, 0.0, 1.0])}}
  got = tasks.example_losses(task, {"user": u, "item": v, "match": jnp.sum(u * v, -1)}, batch)
  expected = losses.in_batch_softmax(u, v, ids[:, 0], batch["labels"]["match"], 0.5,
                                     batch["loss_weights"]["match"])
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  # by hand for row 0: columns 1 and 3 are negatives (row 2 holds the same item, row 2 is out)
  logits = (u @ v.T) / 0.5 - batch["labels"]["match"][None]
  row = logits[0, jnp.array([0, 1, 3])]
  np.testing.assert_allclose(got[0], jax.nn.logsumexp(row) - row[0], rtol=1e-5)


def test_sampled_softmax_kind_scores_the_positive_against_the_negatives_output():
  task = _retrieval_task("sampled_softmax")
  u, v, negatives = _normal(0, B, D), _normal(1, B, D), _normal(2, B, 5, D)
  got = tasks.example_losses(task, {"user": u, "item": v, "negatives": negatives}, {})
  logits = jnp.concatenate([jnp.sum(u * v, -1)[:, None],
                            jnp.einsum("bd,bnd->bn", u, negatives)], 1) / 0.5
  np.testing.assert_allclose(got, jax.nn.logsumexp(logits, 1) - logits[:, 0], rtol=1e-5)


def _batch_negatives_case(num_negatives):
  """DSSM-style outputs with `num_negatives` batch rows per row, and a batch with a repeated
  item (rows 0 and 2) and a row of weight 0 (row 3)."""
  u, v = _normal(0, B, D), _normal(1, B, D)
  rows = dssm.negative_rows(B, num_negatives)
  outputs = {"user": u, "item": v, "match": jnp.sum(u * v, -1), "negatives": v[rows],
             "negative_rows": rows}
  batch = {"ids": {"item_id": jnp.array([[3], [5], [3], [7]])},
           "labels": {"match": _normal(2, B)},
           "loss_weights": {"match": jnp.array([1.0, 1.0, 1.0, 0.0])}}
  return outputs, batch


def test_sampled_softmax_over_batch_rows_equals_numpy_with_log_q_and_hits_out():
  outputs, batch = _batch_negatives_case(2)
  task = _retrieval_task("sampled_softmax", label="item")
  got = np.asarray(tasks.example_losses(task, outputs, batch))
  u, v = np.asarray(outputs["user"], np.float64), np.asarray(outputs["item"], np.float64)
  ids, q = [3, 5, 3, 7], np.asarray(batch["labels"]["match"], np.float64)
  for i in range(B):
    logits = [u[i] @ v[i] / 0.5 - q[i]]             # the positive, log-Q corrected too
    for j in ((i + 1) % B, (i + 2) % B):            # rows i+1, i+2: no hit, weight > 0
      if ids[j] != ids[i] and j != 3:
        logits.append(u[i] @ v[j] / 0.5 - q[j])
    expected = np.log(np.sum(np.exp(logits))) - logits[0]
    assert got[i] == pytest.approx(expected, rel=1e-5, abs=1e-6), i
  assert got[2] == 0.0        # row 2's negatives: row 3 (weight 0) and row 0 (its own item)


def test_sampled_softmax_over_every_other_row_is_in_batch_softmax():
  outputs, batch = _batch_negatives_case(B - 1)
  sampled = tasks.example_losses(_retrieval_task("sampled_softmax", label="item"), outputs,
                                 batch)
  in_batch = tasks.example_losses(_retrieval_task(), outputs, batch)
  np.testing.assert_allclose(sampled[:3], in_batch[:3], rtol=1e-5)   # row 3 has weight 0


def test_sampled_softmax_needs_the_negatives_and_the_log_q_label():
  outputs, batch = _batch_negatives_case(2)
  with pytest.raises(ConfigError, match="tasks.match.label: negatives drawn from the batch"):
    tasks.example_losses(_retrieval_task("sampled_softmax"), outputs, batch)
  del outputs["negatives"]
  with pytest.raises(ConfigError, match="set model.num_negatives"):
    tasks.example_losses(_retrieval_task("sampled_softmax", label="item"), outputs, batch)

@pytest.mark.parametrize("fields, message", [
    (dict(loss="in_batch_softmax", label="item"), "tasks.t.item_feature: a 'in_batch_softmax'"),
    (dict(loss="in_batch_softmax", item_feature="i"), "tasks.t.label: .* positive item"),
    (dict(loss="binary", label="y", item_feature="i"), "tasks.t: item_feature and retrieval"),
    (dict(loss="in_batch_softmax", label="item", item_feature="i", temperature=0.0),
     "tasks.t.temperature: 0.0 is not positive"),
    (dict(loss="in_batch_softmax", label="item", item_feature="i",
          retrieval=dict(corpus=("c.csv",), item_key="item", k=3)), "tasks.t.retrieval: .*'k'"),
    (dict(loss="in_batch_softmax", label="item", item_feature="i",
          retrieval=dict(corpus=("c.csv",))), "retrieval: corpus .* and item_key"),
])
def test_retrieval_task_config_errors_name_the_key(fields, message):
  with pytest.raises(ConfigError, match=message):
    tasks.TaskSpec("t", **fields)


# ---- the MovieLens configs: 3 steps, evaluate, export both towers, serve --------------------

def _columns(path, names):
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  return {n: np.array([r[n] for r in rows], object) for n in names}


def _tiny_experiment(name, paths, tmp_path, overrides=(), **model):
  config = config_lib.load(str(ROOT / "configs" / f"movielens_{name}.py") + ":smoke")
  task = next(iter(config.tasks))
  for item in (f"data.train=('{paths['train.csv']}',)", f"data.eval=('{paths['eval.csv']}',)",
               f"tasks.{task}.retrieval.corpus=('{paths['items.csv']}',)",
               "features.history.max_len=10", "train.steps=3", "train.batch_size=64",
               "train.eval_batch_size=512", "train.progress_bar=False",
               "train.checkpoint_every=1000", *overrides):
    config_lib.override(config, item)
  with config.unlocked():
    config.model.update(TINY[name].keywords, **model)   # the tiny preset, the config's wiring
    for group in config.groups.values():
      group.dim = 8
  return config_lib.experiment(config)


@needs_movielens
@pytest.mark.parametrize("name", ["sasrec", "dssm"])
def test_movielens_config_trains_evaluates_and_exports_the_model_and_its_towers(name, tmp_path):
  paths = movielens.prepare(tmp_path / "data", max_len=10, max_users=8, max_per_user=40)
  experiment = _tiny_experiment(name, paths, tmp_path)
  preset = TINY[name]
  assert isinstance(experiment.model, preset.func)
  assert all(getattr(experiment.model, k) == v for k, v in preset.keywords.items())
  # exports below, from the trained state: the whole model and each tower
  summary = train.train_and_evaluate(experiment, tmp_path / "run", run_export=False)
  metrics = summary["eval"]
  rows = sum(min(len(s), 40) - 2 for s in _raw_sequences(8).values())
  assert summary["steps"] == 3 and summary["train_rows"] == rows
  assert metrics["examples"] == 8 and metrics["corpus"] == 3883
  for key in ("hr@10", "ndcg@10", "recall@10", "recall@50", "full_ndcg@50"):
    assert 0.0 <= metrics[key] <= 1.0

  mesh = sharding.make_mesh()
  state = train.restore_state(experiment, tmp_path / "run", mesh)
  spec = experiment.tasks[0].retrieval
  # the whole model's SavedModel (what `recjax export` writes: the pair's score) on raw rows
  task = experiment.tasks[0].name
  jax_scores = train.predict(experiment, state, input_lib.load_split(experiment, "eval"),
                             mesh)[task]
  inputs = export.serving_inputs(experiment)
  raw = _columns(paths["eval.csv"], sorted(inputs))
  serve = tf.saved_model.load(str(export.export(experiment, state, tmp_path / "whole"))
                              ).signatures[export.SIGNATURE]
  assert set(serve.structured_input_signature[1]) == set(inputs)
  tf_scores = serve(**{c: tf.constant(v.astype(str)) for c, v in raw.items()})[
      export.output_names(experiment)[task]].numpy()
  assert tf_scores.shape == jax_scores.shape == (8,)
  assert np.max(np.abs(tf_scores - jax_scores)) <= 1e-5
  assert np.all(np.isfinite(jax_scores)) and jax_scores.std() > 1e-4   # scores depend on the row
  exported = writes.write(experiment, state, tmp_path / "export" / "m", 7)
  for tower in ("user", "item"):     # TF-Serving base paths of their own, same version
    assert exported[f"{tower}_tower"] == str(tmp_path / "export" / f"m_{tower}_tower" / "7")
  vectors = {}
  for tower, path in (("user", paths["eval.csv"]), ("item", paths["items.csv"])):
    features, _, _ = retrieval.tower_parts(experiment, tower)
    names = sorted({c for f in features for c in f.columns})
    raw = _columns(path, names)
    jax_vectors = np.asarray(retrieval.embed(experiment, state, tower, raw, 512))
    serve = tf.saved_model.load(exported[f"{tower}_tower"]).signatures[export.SIGNATURE]
    assert set(serve.structured_input_signature[1]) == set(names)    # its own columns only
    tf_vectors = serve(**{c: tf.constant(v.astype(str)) for c, v in raw.items()})[
        tower_export.OUTPUT].numpy()
    assert tf_vectors.shape == jax_vectors.shape and tf_vectors.shape[1] > 1
    assert np.max(np.abs(tf_vectors - jax_vectors)) <= 1e-5
    vectors[tower] = tf_vectors.astype(np.float64)
  retrieval.dump(experiment, state, spec, tmp_path / "items.npz")
  dumped = np.load(tmp_path / "items.npz")
  assert list(dumped["keys"]) == list(_columns(paths["items.csv"], ["movie_id"])["movie_id"])
  assert np.max(np.abs(dumped["vectors"] - vectors["item"])) <= 1e-5

  # the evaluation's figures, recomputed from the served vectors with numpy
  evals = _columns(paths["eval.csv"], ["movie_id", "negatives", "seen"])
  index = {m: i for i, m in enumerate(_columns(paths["items.csv"], ["movie_id"])["movie_id"])}
  target = np.array([index[m] for m in evals["movie_id"]])
  scores = vectors["user"] @ vectors["item"].T
  candidates = np.array([[t] + [index[m] for m in n.split("|")]
                         for t, n in zip(target, evals["negatives"])])
  sampled = metrics_lib.ranking_metrics(np.take_along_axis(scores, candidates, 1), (10,))
  for key in ("hr@10", "ndcg@10"):
    assert metrics[key] == pytest.approx(sampled[key], abs=1e-9)
  for row, seen in enumerate(evals["seen"]):
    scores[row, [index[m] for m in seen.split("|")]] = -np.inf
  top = np.argsort(-scores, axis=1, kind="stable")[:, :50]
  assert metrics["recall@50"] == pytest.approx(metrics_lib.recall_at_k(top, target), abs=1e-9)
  assert spec.full_ks == (10, 50)


@needs_movielens
def test_dssm_config_trains_with_sampled_softmax_over_batch_negatives(tmp_path):
  paths = movielens.prepare(tmp_path / "data", max_len=10, max_users=8, max_per_user=40)
  experiment = _tiny_experiment("dssm", paths, tmp_path, ["tasks.match.loss=sampled_softmax"],
                                num_negatives=16)
  assert experiment.tasks[0].loss == "sampled_softmax" and experiment.model.num_negatives == 16
  summary = train.train_and_evaluate(experiment, tmp_path / "run")   # evaluates and exports
  assert summary["steps"] == 3 and np.isfinite(summary["loss"]) and summary["loss"] > 0
  assert 0.0 <= summary["eval"]["recall@50"] <= 1.0 and summary["saved_model"]

  # on one batch, the kind's loss equals numpy's and falls as the step trains on it
  split = input_lib.load_split(experiment, "train")
  batch = next(input_lib.train_iterator(split, 64, 1, seed=0))
  state = train.init_state(experiment, jax.random.key(0))
  outputs = train.forward(experiment, state.params, state.tables, batch)
  assert outputs["negatives"].shape == (64, 16, outputs["item"].shape[1])
  u, v = np.asarray(outputs["user"], np.float64), np.asarray(outputs["item"], np.float64)
  ids, q = batch["ids"]["movie_id"][:, 0], batch["labels"]["match"].astype(np.float64)
  expected = []
  for i in range(64):
    rows = [j % 64 for j in range(i + 1, i + 17) if ids[j % 64] != ids[i]]   # hits out
    logits = v[[i] + rows] @ u[i] / 0.05 - q[[i] + rows]     # temperature 0.05, log-Q
    expected.append(np.log(np.sum(np.exp(logits - logits.max()))) + logits.max() - logits[0])
  got = tasks.example_losses(experiment.tasks[0], outputs, batch)
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
  step = jax.jit(train.make_train_step(experiment))
  losses_ = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses_.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses_)) and losses_[-1] < losses_[0] - 0.1, losses_

"""Tasks: several labels per row, missing labels, loss weights, held-out eval rows, regression.

A small CSV of users and items with a click label, a purchase label that is empty where the
user did not click (masked, as multi-task logs are), a rating and a watch time; a two-task
shared-bottom model and a one-task regression model train, evaluate per task and export.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.export import saved_model as export
from recjax.input import pipeline as input_lib
from recjax.tasks import metrics
from recjax import sharding
from recjax.tasks import spec as tasks
from recjax.train import loop as train
from recjax.errors import ConfigError, DataError

ROWS = 600


def _write_csv(path, rows=ROWS, seed=0):
  rng = np.random.default_rng(seed)
  user, item = rng.integers(0, 20, rows), rng.integers(0, 50, rows)
  x = rng.normal(size=rows)
  click = (rng.random(rows) < 1 / (1 + np.exp(-(x + (item % 3) - 1)))).astype(int)
  buy = np.where(click == 1, (rng.random(rows) < 0.5).astype(int).astype(str), "")
  rating = np.clip(np.round(3 + x + rng.normal(scale=0.5, size=rows)), 1, 5)
  watch = rng.exponential(30, rows)
  lines = ["user,item,x,click,buy,rating,watch,w"] + [
      f"u{u},i{i},{a:.4f},{c},{b},{r:g},{t:.2f},{1 + (u % 2)}"
      for u, i, a, c, b, r, t in zip(user, item, x, click, buy, rating, watch)]
  path.write_text("\n".join(lines) + "\n")
  return path


def _config(path, **tasks_) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.data = dict(train=(str(path),), eval_fraction=0.25, split_seed=7)
  config.tasks = tasks_ or dict(
      click=dict(label="click", group_by="user"),
      buy=dict(label="buy", missing="mask", weight=0.5))
  config.features = dict(user=dict(kind="id", hash_bucket_size=64),
                         item=dict(kind="id", hash_bucket_size=128),
                         x=dict(kind="numeric", mean=0.0, std=1.0, log1p=False))
  config.groups = dict(deep=dict(features=("user", "item"), dim=4))
  config.model = dict(name="shared_bottom", bottom=(8,), tower=(4,), tasks=("click", "buy"))
  config.train = dict(steps=3, batch_size=64, eval_batch_size=128, progress_bar=False,
                      early_stop_metric="click/auc")
  return config


def _serve(summary, path, experiment):
  """The exported SavedModel's outputs on the eval rows (raw columns, as served)."""
  split = input_lib.load_split(experiment, "eval", with_labels=False)
  raw = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
  held = input_lib._holdout(experiment.data, "eval", len(raw))
  feed = {"user": tf.constant(raw["user"][held].astype(str)),
          "item": tf.constant(raw["item"][held].astype(str)),
          "x": tf.constant(raw["x"][held].astype(np.float32))}
  serve = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE]
  assert len(held) == split.rows
  return {k: v.numpy() for k, v in serve(**feed).items()}


def test_two_tasks_train_evaluate_per_task_and_export_one_output_each(tmp_path):
  path = _write_csv(tmp_path / "log.csv")
  experiment = config_lib.experiment(_config(path))
  summary = train.train_and_evaluate(experiment, tmp_path / "run")
  assert summary["steps"] == 3 and set(summary["task_loss"]) == {"click", "buy"}
  ev = summary["eval"]
  assert {"click/auc", "click/gauc", "click/gauc_groups", "buy/auc", "buy/log_loss"} <= set(ev)
  split = input_lib.load_split(experiment, "eval")
  clicked = split.arrays["label_masks"]["buy"] > 0
  assert ev["click/examples"] == split.rows and ev["buy/examples"] == clicked.sum() < split.rows
  state = train.restore_state(experiment, tmp_path / "run", sharding.make_mesh())
  predicted = train.predict(experiment, state, split, sharding.make_mesh())
  assert ev["buy/auc"] == pytest.approx(metrics.auc(
      split.arrays["labels"]["buy"][clicked], predicted["buy"][clicked]))
  assert ev["click/gauc"] == pytest.approx(metrics.gauc(
      split.arrays["labels"]["click"], predicted["click"], split.groups["user"])[0])
  served = _serve(summary, path, experiment)
  assert set(served) == {"click", "buy"}
  for task in ("click", "buy"):
    np.testing.assert_allclose(served[task], predicted[task], atol=1e-5)


def test_total_loss_is_the_weighted_sum_of_each_tasks_masked_mean():
  experiment = config_lib.experiment(_config("unused.csv"))
  rng = np.random.default_rng(0)
  logits = {t: rng.normal(size=8).astype(np.float32) for t in ("click", "buy")}
  labels = {t: (rng.random(8) < 0.5).astype(np.float32) for t in ("click", "buy")}
  weights = {"click": np.ones(8, np.float32), "buy": np.array([1, 0, 2, 0, 1, 1, 0, 3], np.float32)}
  batch = {"labels": labels, "loss_weights": weights}
  total, per_task = tasks.total_loss(experiment.tasks, jax.tree.map(jnp.asarray, logits), batch)

  def bce(z, y):
    return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0) - z * y

  expected = {t: np.sum(bce(logits[t], labels[t]) * weights[t]) / np.sum(weights[t])
              for t in ("click", "buy")}
  for t in expected:
    assert float(per_task[t]) == pytest.approx(expected[t], rel=1e-6)
  assert float(total) == pytest.approx(expected["click"] + 0.5 * expected["buy"], rel=1e-6)


def test_an_empty_label_is_a_bad_row_named_by_line_unless_the_task_masks_it(tmp_path):
  path = _write_csv(tmp_path / "log.csv")
  first_empty = next(n for n, line in enumerate(path.read_text().splitlines(), 1)
                     if line.split(",")[4] == "")
  strict = _config(path, click=dict(label="click"), buy=dict(label="buy"))
  with pytest.raises(DataError, match=rf"log.csv:{first_empty}: column 'buy' is empty"):
    input_lib.load_split(config_lib.experiment(strict), "train")

  split = input_lib.load_split(config_lib.experiment(_config(path)), "train")
  raw = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
  held = input_lib._holdout(config_lib.experiment(_config(path)).data, "train", ROWS)
  empty = raw["click"][held] == 0            # the purchase label is empty without a click
  np.testing.assert_array_equal(split.arrays["label_masks"]["buy"], (~empty).astype(np.float32))
  np.testing.assert_array_equal(split.arrays["loss_weights"]["buy"], (~empty).astype(np.float32))
  np.testing.assert_array_equal(split.arrays["labels"]["buy"][empty], 0.0)
  np.testing.assert_array_equal(split.arrays["label_masks"]["click"], 1.0)


def test_a_malformed_label_is_a_bad_row_under_either_missing_policy(tmp_path):
  path = tmp_path / "log.csv"
  path.write_text("user,item,x,click,buy\nu1,i1,0.5,1,1\nu2,i2,0.1,0,maybe\nu3,i3,1,1,0\n")
  for missing in ("error", "mask"):
    config = _config(path, click=dict(label="click"), buy=dict(label="buy", missing=missing))
    message = r"log.csv:3: column 'buy' holds 'maybe'" if missing == "error" else (
        r"log.csv:3: label 'buy' of task 'buy' is 'maybe', which is not a number")
    with pytest.raises(DataError, match=message):
      input_lib.load_split(config_lib.experiment(config), "train")
  config = _config(path, click=dict(label="click"), buy=dict(label="buy", missing="mask"))
  config.data.bad_rows, config.data.max_bad_fraction = "skip", 0.5
  config.data.eval_fraction = 0.0
  split = input_lib.load_split(config_lib.experiment(config), "train")
  assert split.bad_rows == {"bad_label": 1}


def test_sample_weights_and_upsampling_rule_weight_each_tasks_loss(tmp_path):
  path = _write_csv(tmp_path / "log.csv")
  config = _config(path, click=dict(label="click", upsample_column="watch", upsample_above=40.0,
                                    upsample_factor=3.0),
                   buy=dict(label="buy", missing="mask"))
  config.data.sample_weight = "w"
  config.data.eval_fraction = 0.0
  split = input_lib.load_split(config_lib.experiment(config), "train")
  raw = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
  expected = raw["w"] * np.where((raw["click"] == 1) & (raw["watch"] > 40.0), 3.0, 1.0)
  np.testing.assert_allclose(split.arrays["loss_weights"]["click"], expected)
  np.testing.assert_allclose(split.arrays["loss_weights"]["buy"],
                             raw["w"] * (raw["click"] == 1))


def test_eval_fraction_holds_out_a_seeded_share_of_the_train_rows(tmp_path):
  path = _write_csv(tmp_path / "log.csv")
  experiment = config_lib.experiment(_config(path))
  train_rows = input_lib.load_split(experiment, "train").arrays["dense"][:, 0]
  eval_rows = input_lib.load_split(experiment, "eval").arrays["dense"][:, 0]
  x = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")["x"]
  assert len(train_rows) + len(eval_rows) == ROWS and 0.18 < len(eval_rows) / ROWS < 0.32
  np.testing.assert_allclose(np.sort(np.r_[train_rows, eval_rows]), np.sort(x), atol=1e-6)
  again = input_lib.load_split(experiment, "eval").arrays["dense"][:, 0]
  np.testing.assert_array_equal(again, eval_rows)
  config = _config(path)
  config.data.split_seed = 8
  other = input_lib.load_split(config_lib.experiment(config), "eval").arrays["dense"][:, 0]
  assert len(other) != len(eval_rows) or not np.array_equal(other, eval_rows)


def test_a_regression_task_trains_on_squared_error_and_reports_rmse(tmp_path):
  path = _write_csv(tmp_path / "log.csv")
  config = _config(path, rating=dict(label="rating", loss="mse"))
  config.model = dict(name="dnn", task="rating", hidden=(8,))
  config.train.early_stop_metric = "rmse"
  experiment = config_lib.experiment(config)
  summary = train.train_and_evaluate(experiment, tmp_path / "run")
  split = input_lib.load_split(experiment, "eval")
  state = train.restore_state(experiment, tmp_path / "run", sharding.make_mesh())
  predicted = train.predict(experiment, state, split, sharding.make_mesh())["rating"]
  assert summary["eval"]["rmse"] == pytest.approx(
      np.sqrt(np.mean((predicted - split.arrays["labels"]["rating"]) ** 2)), rel=1e-6)
  served = _serve(summary, path, experiment)
  assert set(served) == {"prediction"}
  np.testing.assert_allclose(served["prediction"], predicted, atol=1e-5)


def test_a_regression_task_clips_what_it_serves_and_evaluates_but_not_its_loss(tmp_path):
  path = _write_csv(tmp_path / "log.csv")
  # 3 steps leave the raw outputs near 0, on both sides of these bounds (asserted below)
  low, high = -0.05, 0.0
  config = _config(path, rating=dict(label="rating", loss="mse", clip_min=low, clip_max=high))
  config.model = dict(name="dnn", task="rating", hidden=(8,))
  config.train.early_stop_metric = "rmse"
  experiment = config_lib.experiment(config)
  summary = train.train_and_evaluate(experiment, tmp_path / "run")
  mesh = sharding.make_mesh()
  split = input_lib.load_split(experiment, "eval")
  state = train.restore_state(experiment, tmp_path / "run", mesh)
  predicted = train.predict(experiment, state, split, mesh)["rating"]
  config.tasks.rating.update(clip_min=None, clip_max=None)
  unclipped = config_lib.experiment(config)
  raw = train.predict(unclipped, state, split, mesh)["rating"]
  assert (raw < low).any() and (raw > high).any() and ((raw > low) & (raw < high)).any()
  np.testing.assert_array_equal(predicted, np.clip(raw, low, high))
  assert summary["eval"]["rmse"] == pytest.approx(
      np.sqrt(np.mean((predicted - split.arrays["labels"]["rating"]) ** 2)), rel=1e-6)
  np.testing.assert_allclose(_serve(summary, path, experiment)["prediction"], predicted,
                             atol=1e-6)
  outputs = {"rating": jnp.asarray(raw)}
  batch = {"labels": {"rating": split.arrays["labels"]["rating"]},
           "loss_weights": {"rating": np.ones(split.rows, np.float32)}}
  assert float(tasks.total_loss(experiment.tasks, outputs, batch)[0]) == pytest.approx(
      np.mean((raw - split.arrays["labels"]["rating"]) ** 2), rel=1e-6)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(label=dict(column="click")), "give either label"),
    (lambda c: c.tasks.click.update(clip_max=1.0), r"tasks.click.clip_max: only mse tasks"),
    (lambda c: c.tasks.update(rating=dict(label="rating", loss="mse", clip_min=5, clip_max=1)),
     r"tasks.rating.clip_min: 5.0 is not below clip_max 1.0"),
    (lambda c: c.tasks.update(rating=dict(label="rating", loss="mse", clip_max=float("nan"))),
     r"tasks.rating.clip_max: nan is not finite"),
    (lambda c: c.tasks.click.update(loss="hinge"), r"tasks.click.loss: 'hinge' is not one of"),
    (lambda c: c.tasks.click.update(missing="drop"), r"tasks.click.missing"),
    (lambda c: c.tasks.click.update(label=""), r"tasks.click.label: a 'binary' task needs"),
    (lambda c: c.train.update(early_stop_metric="auc"), r"use <task>/<metric>"),
    (lambda c: c.train.update(early_stop_metric="click/f1"), r"'click/f1' is not one of"),
    (lambda c: c.tasks.click.update(colour="red"), r"tasks.click.colour: no such key"),
])
def test_task_config_errors_name_the_key(change, message):
  config = _config("unused.csv")
  change(config)
  with pytest.raises(ConfigError, match=message):
    config_lib.experiment(config)


def test_a_task_reading_an_output_the_model_lacks_is_named():
  config = _config("unused.csv")
  config.tasks.buy.output = "purchase"
  with pytest.raises(ConfigError, match=r"tasks.buy.output: the model has no output 'purchase'"):
    train.init_state(config_lib.experiment(config), jax.random.key(0))

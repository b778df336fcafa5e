"""configs/movielens100k.py: rating regression on the official MovieLens-100K folds.

The smoke run trains the FM (biased matrix factorisation: no numeric features, so its
first-order part is the global bias alone) for 20 steps of 32 ratings, evaluates RMSE on the
whole u1 test fold and exports a SavedModel whose served ratings (clipped to [1, 5]) equal
JAX's. The data lives under the shared data root ($RECJAX_DATA, by default ../shared/data)
and may not be copied into the repository, so these tests skip without it.
"""

import gzip
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.datasets import paths
from recjax.errors import ConfigError
from recjax.export import saved_model as export
from recjax.input import pipeline as input_lib
from recjax import sharding
from recjax.train import loop as train

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "movielens100k.py"
DATA = paths.shared("movielens", "ml-100k")

pytestmark = pytest.mark.skipif(
    not (DATA / "u1.base.gz").exists(),
    reason=f"MovieLens-100K is not at {DATA} (the shared data root, $RECJAX_DATA, is not part "
    "of the repository)")


def _experiment(arg):
  config = config_lib.load(f"{CONFIG}:{arg}")
  config_lib.override(config, "train.progress_bar=False")
  return config_lib.experiment(config)


def _test_rows(n):
  with gzip.open(DATA / "u1.test.gz", "rt") as f:
    rows = [line.split("\t") for _, line in zip(range(n), f)]
  return {"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
          "rating": np.array([float(r[2]) for r in rows], np.float32)}


def test_smoke_trains_evaluates_rmse_and_serves_the_same_ratings(tmp_path):
  experiment = _experiment("u1,fm,smoke")
  summary = train.train_and_evaluate(experiment, tmp_path)
  assert summary["steps"] == 20 and summary["train_rows"] == 80_000
  mesh = sharding.make_mesh()
  split = input_lib.load_split(experiment, "eval")
  state = train.restore_state(experiment, tmp_path, mesh)
  predicted = train.predict(experiment, state, split, mesh)["rating"]
  labels = split.arrays["labels"]["rating"]
  assert split.rows == 20_000 and set(np.unique(labels)) == {1, 2, 3, 4, 5}
  ev = summary["eval"]
  assert ev["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - labels) ** 2)), rel=1e-5)
  assert ev["mae"] == pytest.approx(np.mean(np.abs(predicted - labels)), rel=1e-5)
  # 20 steps of Adam at 0.2 bring the global bias from 0 near the mean rating (about 3.53);
  # served ratings are clipped to [1, 5] (tests/tasks/test_spec.py checks the clipping itself)
  assert 3.0 < predicted.mean() < 4.0 and ev["rmse"] < 1.3
  assert predicted.min() >= 1.0 and predicted.max() <= 5.0
  rows = _test_rows(64)
  serve = tf.saved_model.load(summary["saved_model"]).signatures[export.SIGNATURE]
  served = serve(user_id=tf.constant(rows["user_id"]), item_id=tf.constant(rows["item_id"]))
  assert set(served) == {"prediction"}
  np.testing.assert_allclose(served["prediction"].numpy(), predicted[:64], atol=1e-5)
  np.testing.assert_array_equal(labels[:64], rows["rating"])


@pytest.mark.parametrize("arg, model, fold", [
    ("", "fm", "u1"), ("u3", "fm", "u3"), ("deepfm,u5", "deepfm", "u5"),
    ("u2,fm,smoke", "fm", "u2")])
def test_the_arg_picks_the_fold_and_the_model(arg, model, fold):
  experiment = _experiment(arg)
  assert experiment.model_name == model
  assert experiment.data.train == (str(DATA / f"{fold}.base.gz"),)
  assert experiment.data.eval == (str(DATA / f"{fold}.test.gz"),)
  assert [(t.loss, t.clip_min, t.clip_max) for t in experiment.tasks] == [("mse", 1.0, 5.0)]


@pytest.mark.parametrize("arg", ["u6", "fm,deepfm", "u1,u2", "side"])
def test_an_unknown_arg_names_the_valid_ones(arg):
  with pytest.raises(ConfigError, match=r"expected at most one fold \(u1, u2, u3, u4, u5\), "
                                       r"one model \(fm, deepfm\)"):
    config_lib.load(f"{CONFIG}:{arg}")

"""The ranking signature: one user row and N item rows score as the N full rows do.

On the config with every feature kind (sequences aligned with each other, a user x item
cross, a map lookup keyed by an item column, vectors), with request context (`tags`, in no
entity), against `serving_default` on the N full rows of the same user and items.
"""

import jax
import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from recjax import config as config_lib
from recjax.export import ranking
from recjax.export import saved_model
from recjax.input import synthetic
from recjax.train import loop as train
from tests.conftest import ROOT

SMOKE = f"{ROOT / 'configs' / 'synthetic_all_features.py'}:smoke"
USER = ("user", "city", "hist_item", "hist_cat", "age", "user_vec")
ITEM = ("item", "cat", "price", "cat_ctr")


def _experiment():
  config = config_lib.load(SMOKE)
  with config.unlocked():
    config.serving = dict(user=dict(key="user", columns=USER),
                          item=dict(key="item", columns=ITEM))
  return config_lib.experiment(config, "synthetic_all_features")


def _feed(table, columns, specs):
  return {c: tf.constant(table[c].to_numpy().astype(np.float32)) if specs[c].dtype == tf.float32
          else tf.constant(table[c].cast(pa.string()).to_pylist(), tf.string) for c in columns}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  experiment = _experiment()
  state = train.init_state(experiment, jax.random.key(3))
  directory = saved_model.export(experiment, state,
                                 tmp_path_factory.mktemp("ranking") / "model" / "1")
  return experiment, tf.saved_model.load(str(directory))


def test_sides_follow_the_serving_entities():
  experiment = _experiment()
  one_row, item = ranking.sides(experiment)
  assert item == set(ITEM) and one_row == set(USER) | {"tags"}          # tags: context
  # the cross (city x cat) and the map lookups keyed by cat are computed per candidate
  assert ranking.item_side_features(experiment) == {
      "item_id", "cat", "price_bucket", "city_cat", "cat_ctr_id", "cat_ctr", "price"}


@pytest.mark.parametrize("n", [1, 7, 64])
def test_rank_scores_equal_serving_default_on_the_full_rows(exported, n):
  experiment, model = exported
  specs = saved_model.serving_inputs(experiment)
  table = synthetic.generate(experiment.data.synthetic, "eval")
  one_row, item = ranking.sides(experiment)
  for user_row in (0, 5):
    user = table.slice(user_row, 1)
    items = table.slice(100, n)
    full = pa.table({c: (pa.concat_arrays([user[c].combine_chunks()] * n)
                         if c in one_row else items[c].combine_chunks()) for c in specs})
    expected = model.signatures[saved_model.SIGNATURE](**_feed(full, specs, specs))
    got = model.signatures[ranking.SIGNATURE](**_feed(user, one_row, specs),
                                              **_feed(items, item, specs))
    assert got[saved_model.OUTPUT].shape == (n,)
    np.testing.assert_allclose(got[saved_model.OUTPUT].numpy(),
                               expected[saved_model.OUTPUT].numpy(), atol=1e-5, rtol=0)
    assert expected[saved_model.OUTPUT].numpy().std() > 0 or n == 1     # items differ


def test_rank_takes_exactly_one_user_row(exported):
  experiment, model = exported
  specs = saved_model.serving_inputs(experiment)
  table = synthetic.generate(experiment.data.synthetic, "eval")
  one_row, item = ranking.sides(experiment)
  with pytest.raises(tf.errors.InvalidArgumentError, match="is of the user or the context"):
    model.signatures[ranking.SIGNATURE](**_feed(table.slice(0, 2), one_row, specs),
                                        **_feed(table.slice(0, 3), item, specs))


def test_no_rank_signature_without_a_serving_item(tmp_path):
  experiment = config_lib.experiment(config_lib.load(SMOKE))
  state = train.init_state(experiment, jax.random.key(0))
  model = tf.saved_model.load(str(saved_model.export(experiment, state, tmp_path / "1")))
  assert set(model.signatures) == {saved_model.SIGNATURE}

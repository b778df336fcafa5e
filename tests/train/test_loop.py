"""The train loop: the bundled default job reaches its published accuracy; the step donates."""

import jax
import numpy as np

from recjax import config as config_lib
from recjax.input import pipeline as input_lib
from recjax import sharding
from recjax.train import loop as train
from tests.conftest import ADULT_CONFIG


def _experiment(*overrides, spec=ADULT_CONFIG):
  config = config_lib.load(spec)
  for item in ("train.progress_bar=False",) + overrides:
    config_lib.override(config, item)
  return config_lib.experiment(config)


def test_adult_wide_deep_reaches_accuracy_085_on_the_official_test_split(tmp_path):
  summary = train.train_and_evaluate(_experiment(), tmp_path, run_export=False)
  print("adult_wide_deep eval:", summary["eval"])
  assert summary["eval"]["examples"] == 16281
  assert summary["eval"]["accuracy"] >= 0.85
  assert summary["eval"]["auc"] >= 0.90


def test_train_step_donates_the_state_and_lowers_the_loss():
  experiment = _experiment("train.steps=60", spec=f"{ADULT_CONFIG}:smoke")
  mesh = sharding.make_mesh()
  split = input_lib.load_split(experiment, "train")
  batches = input_lib.train_iterator(split, 256, 60, seed=0)
  state = jax.jit(lambda r: train.init_state(experiment, r))(jax.random.key(0))
  step = jax.jit(train.make_train_step(experiment), donate_argnums=0)
  first = sharding.to_global(next(batches), sharding.batch_sharding(mesh))
  compiled = step.lower(state, first).compile()
  table_bytes = sum(x.nbytes for x in jax.tree.leaves(state.tables))
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  memory = compiled.memory_analysis()
  if memory is not None:                 # every input buffer of the state is reused in place
    assert memory.alias_size_in_bytes >= state_bytes >= table_bytes
  old_state = state
  losses = []
  state, metrics = step(state, first)
  assert old_state.params["over_arch"]["kernel"].is_deleted()    # donated, not copied
  losses.append(float(metrics["loss"]))
  for batch in batches:
    state, metrics = step(state, sharding.to_global(batch, sharding.batch_sharding(mesh)))
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 60
  assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])

"""TF-Serving's layout: `export/<model_name>/<version>/`, versions only whole, old ones pruned.

A watcher (what TF-Serving's file system source does: list the base path, take the integer
directories) runs beside an export and must never see a version without its saved_model.pb
and variables.
"""

import json
import threading

import jax
import tensorflow as tf

from recjax import config as config_lib
from recjax.export import saved_model
from recjax.export import writes
from recjax.train import loop as train
from tests.conftest import ADULT_CONFIG


def test_a_training_run_leaves_only_integer_versions_and_the_best_record(adult_run):
  workdir, summary = adult_run
  base = workdir / "export" / "adult_wide_deep"
  entries = sorted(p.name for p in base.iterdir())
  assert entries == sorted([str(summary["steps"]), "best.json"])
  assert json.loads((base / "best.json").read_text())["version"] == summary["steps"]
  newest = base / str(writes.versions(base)[-1])
  model = tf.saved_model.load(str(newest))
  assert set(model.signatures) == {saved_model.SIGNATURE}
  assert (workdir / "saved_model").resolve() == newest
  assert summary["export"]["base_path"] == str(base)


def test_a_watcher_never_sees_half_a_version_and_keep_prunes_the_oldest(tmp_path):
  experiment = config_lib.experiment(config_lib.load(f"{ADULT_CONFIG}:smoke"), "adult")
  state = train.init_state(experiment, jax.random.key(0))
  base = tmp_path / "export" / "adult"
  seen, bad, done = set(), [], threading.Event()

  def watch():
    while not done.is_set():
      for version in writes.versions(base):
        path = base / str(version)
        seen.add(version)
        whole = (path / "saved_model.pb").exists() and (path / "variables").is_dir()
        if not whole and path.exists():     # (a pruned version is gone whole: renamed away)
          bad.append(version)

  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    for version in (10, 20, 30, 40):
      writes.write(experiment, state, base, version)
      writes.prune(base, 2, protect=10)
  finally:
    done.set()
    watcher.join()
  assert not bad and seen >= {10, 40}
  assert writes.versions(base) == [10, 30, 40]      # the 2 newest and the protected best
  assert not [p for p in base.iterdir() if p.name.startswith(".")]   # no temporaries left

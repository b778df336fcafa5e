"""The sharded embedding engine on 8 virtual CPU devices (in its own process, see
eight_devices.py), and a whole training run that gives the same model on 1 and 8 devices."""

import os
import pathlib
import subprocess
import sys

from tests.conftest import ADULT_CONFIG, ROOT, run_cli, summary_of

EIGHT = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             TF_CPP_MIN_LOG_LEVEL="2")


def test_sharded_lookup_update_overflow_and_donation_on_8_devices():
  result = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("eight_devices.py"))],
                          capture_output=True, text=True, env=EIGHT, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "equal the replicated reference" in result.stdout
  print(result.stdout)


def test_training_on_8_devices_with_sharded_tables_equals_1_device(adult_run, tmp_path):
  _, one_device = adult_run
  eight = summary_of(run_cli("train", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", tmp_path,
                             "--config.train.progress_bar=False", "--no-export",
                             "--config.groups.deep.placement=sharded",
                             "--config.groups.wide.placement=sharded", env=EIGHT))
  assert eight["steps"] == one_device["steps"]
  for metric in ("auc", "log_loss", "accuracy", "mean_prediction"):
    assert abs(eight["eval"][metric] - one_device["eval"][metric]) <= 1e-5, metric

"""The sharded embedding engine on 8 virtual CPU devices (in its own process, see
eight_devices.py); whole training runs that give the same model on 1 device, 8 devices and
2 processes x 2 devices; checkpoints that restore onto other device counts."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np

from tests.conftest import ADULT_CONFIG, ROOT, run_cli, summary_of

TESTS = ROOT / "tests"          # the scripts it runs in other processes

EIGHT = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             TF_CPP_MIN_LOG_LEVEL="2")


def test_sharded_lookup_update_overflow_and_donation_on_8_devices():
  result = subprocess.run([sys.executable, str(TESTS / "eight_devices.py")],
                          capture_output=True, text=True, env=EIGHT, cwd=ROOT, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "equal the replicated reference" in result.stdout
  print(result.stdout)


def devices(n: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
              TF_CPP_MIN_LOG_LEVEL="2")


# Adult's small tables sit in the first of 8 row blocks, so every id goes to one shard: a
# capacity of all local ids keeps every step on the all_to_all path (overflow is tested in
# eight_devices.py).
SHARDED = tuple(f"--config.groups.{g}.{k}" for g in ("deep", "wide")
                for k in ("placement=sharded", "capacity_factor=8.0"))
SMOKE = (f"{ADULT_CONFIG}:smoke",)


def dump(workdir, out, n_devices, *overrides):
  """Tables and slots of `workdir`'s last checkpoint, restored onto `n_devices` devices."""
  result = subprocess.run(
      [sys.executable, str(TESTS / "dump_state.py"), *SMOKE,
       str(workdir), str(out), *overrides], capture_output=True, text=True,
      env=devices(n_devices), cwd=ROOT, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  return dict(np.load(out))


def test_sharded_training_is_the_same_on_1_device_8_devices_and_2_processes(adult_run, tmp_path):
  """Item 2 of the embedding issue: one global batch sequence, the same loss and tables on
  1 device, on 8 devices in one process, and on 2 processes x 2 devices (tables row-sharded
  over every device, all_to_all across processes through gloo)."""
  one_dir, one = adult_run                      # 1 device: a sharded table is one whole shard
  eight_dir, pair_dir = tmp_path / "eight", tmp_path / "pair"
  eight = summary_of(run_cli("train", "--config", *SMOKE, "--workdir", eight_dir,
                             "--config.train.progress_bar=False", "--no-export", *SHARDED,
                             env=devices(8)))
  launched = subprocess.run(
      [sys.executable, str(ROOT / "launch" / "launch.py"), "--num_processes", "2", "--devices", "2",
       "--config", *SMOKE, "--workdir", str(pair_dir), "--config.train.progress_bar=False",
       "--no-export", *SHARDED], capture_output=True, text=True, cwd=ROOT, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert launched.returncode == 0, launched.stderr[-4000:]
  pair = summary_of(launched)
  for run in (eight, pair):
    assert run["steps"] == one["steps"] and run["embedding_overflow"] == 0
    assert abs(run["loss"] - one["loss"]) <= 1e-5, (run["loss"], one["loss"])
    for metric in ("auc", "log_loss", "accuracy", "mean_prediction"):
      assert abs(run["eval"][metric] - one["eval"][metric]) <= 1e-5, metric
  reference = dump(one_dir, tmp_path / "one.npz", 1)
  for name, state in (("8 devices", dump(eight_dir, tmp_path / "8.npz", 1, *SHARDED)),
                      ("2 processes", dump(pair_dir, tmp_path / "2x2.npz", 1, *SHARDED))):
    for key, want in reference.items():
      got = state[key][:len(want)] if want.ndim else state[key]   # sharded: padded rows
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")


def test_a_checkpoint_from_8_devices_restores_bitwise_onto_4_2_1_and_trains_on(tmp_path):
  """Items 5 (embedding) and 3 (lifecycle): tables and slots saved from 8 devices restore
  bitwise onto 4, 2 and 1, and training continues from there on 2 and on 1 device."""
  workdir = tmp_path / "eight"
  run_cli("train", "--config", *SMOKE, "--workdir", workdir, "--config.train.progress_bar=False",
          "--no-eval", "--no-export", *SHARDED, env=devices(8))
  saved = dump(workdir, tmp_path / "8.npz", 8, *SHARDED)
  assert saved[".step"] == 30 and len(saved) > 4
  for n in (4, 2, 1):
    restored = dump(workdir, tmp_path / f"{n}.npz", n, *SHARDED)
    assert restored.keys() == saved.keys()
    for key in saved:
      np.testing.assert_array_equal(restored[key], saved[key], err_msg=f"{n} devices: {key}")
  for n in (2, 1):
    copy = tmp_path / f"continue_{n}"
    shutil.copytree(workdir, copy)
    summary = summary_of(run_cli("train", "--config", *SMOKE, "--workdir", copy,
                                 "--config.train.progress_bar=False", "--config.train.steps=40",
                                 "--no-export", *SHARDED, env=devices(n)))
    assert summary["resumed_from"] == 30 and summary["steps"] == 40
    assert np.isfinite(summary["loss"]) and summary["eval"]["auc"] > 0.8


def test_overflow_is_reported_and_falls_back_exactly_or_stops_by_config(adult_run, tmp_path):
  """Item 6: with the default capacity, Adult's ids crowd the first shard; the run says so
  (summary count, a warning naming the group) and the slower path gives the same model; with
  on_overflow=error the run stops with a clear error and writes no checkpoint."""
  _, one = adult_run
  crowded = [f"--config.groups.{g}.placement=sharded" for g in ("deep", "wide")]
  result = run_cli("train", "--config", *SMOKE, "--workdir", tmp_path / "fallback",
                   "--config.train.progress_bar=False", "--no-export", *crowded, env=devices(8))
  summary = summary_of(result)
  assert summary["embedding_overflow"] > 0
  assert summary["embedding_overflow"] == sum(summary["embedding_overflow_by_group"].values())
  assert "group 'deep':" in result.stderr and "exceeded the all_to_all capacity" in result.stderr
  assert abs(summary["loss"] - one["loss"]) <= 1e-5
  for metric in ("auc", "log_loss", "accuracy"):
    assert abs(summary["eval"][metric] - one["eval"][metric]) <= 1e-5, metric
  workdir = tmp_path / "error"
  result = run_cli("train", "--config", *SMOKE, "--workdir", workdir, *crowded,
                   "--config.train.progress_bar=False", "--config.groups.deep.on_overflow=error",
                   env=devices(8), check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "recjax: error: group 'deep':" in result.stderr
  assert "raise groups.deep.capacity_factor" in result.stderr and "Traceback" not in result.stderr
  assert not list((workdir / "checkpoints").glob("[0-9]*"))

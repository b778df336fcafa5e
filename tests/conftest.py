"""Shared test helpers: the repository root, the bundled Adult config, a CLI runner."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADULT_CONFIG = str(ROOT / "configs" / "adult_wide_deep.py")


def run_cli(*args, timeout=600, check=True, env=None) -> subprocess.CompletedProcess:
  """Runs `python -m recjax.main ARGS` in a fresh process, as a user's shell would."""
  env = env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-m", "recjax.main", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
  if check and result.returncode != 0:
    raise AssertionError(f"recjax {' '.join(map(str, args))} failed:\n{result.stderr[-4000:]}")
  return result


def summary_of(result: subprocess.CompletedProcess) -> dict:
  """The one-line JSON summary that ends a successful run."""
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def adult_run(tmp_path_factory):
  """One smoke training run of the bundled Adult config (30 steps), shared by tests."""
  workdir = tmp_path_factory.mktemp("adult_smoke")
  result = run_cli("train", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir,
                   "--config.train.progress_bar=False")
  return workdir, summary_of(result)

"""Shared test helpers: the repository root, the bundled Adult config, a CLI runner."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADULT_CONFIG = str(ROOT / "configs" / "adult_wide_deep.py")

# One persistent XLA compilation cache for the run, shared by both xdist workers and every
# process a test starts (they inherit the environment; set here, before anything imports jax).
# Most of a smoke run's time is compiling, and many tests compile the same programs (the Adult
# smoke run's steps on 1 and on 8 devices): an 8-device smoke run takes 44 s cold, 14 s warm.
# The cache is keyed by the program, the devices and the compile flags, so a hit is the same
# executable; it is new for each run (never a stale one) and removed at its end.
# A cache the user set is left alone; the process that made this one (the xdist controller, or
# the only process) removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ.update(JAX_COMPILATION_CACHE_DIR=tempfile.mkdtemp(prefix="recjax-tests-xla-cache-"),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    RECJAX_TESTS_XLA_CACHE_OWNER=str(os.getpid()))


def pytest_unconfigure(config):
  if os.environ.get("RECJAX_TESTS_XLA_CACHE_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Modules with the longest tests (minutes: 8 devices, 2 processes, kill and resume) run first.
# xdist's worksteal gives each worker a contiguous half of the list and balances from the
# tails, so the run then ends on short tests on both workers, instead of one worker alone on a
# 3-minute test that came last in file order.
SLOWEST_FIRST = ("test_sharded_tables.py", "test_launch.py", "test_main.py", "test_lifecycle.py")


def pytest_collection_modifyitems(items):
  def rank(item):
    name = item.path.name
    return SLOWEST_FIRST.index(name) if name in SLOWEST_FIRST else len(SLOWEST_FIRST)
  items.sort(key=rank)                        # stable: file order within each rank


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

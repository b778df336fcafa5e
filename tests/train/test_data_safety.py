"""What a run reads back is what it wrote: a damaged checkpoint is named and skipped, never
used (no NaN metrics, no NaN-scoring export); a checkpoint of another config is refused
naming what changed; `export --output` leaves every other file of its base path as it was."""

import hashlib
import json
import math
import shutil

import pytest

from tests.conftest import ADULT_CONFIG, run_cli, summary_of

SMOKE = f"{ADULT_CONFIG}:smoke"


def _flip(directory, count: int = 256) -> int:
  """Inverts `count` bytes in the middle of every array data file under `directory`."""
  flipped = 0
  for path in directory.rglob("*"):
    if path.is_file() and path.parent.name == "d":
      data = bytearray(path.read_bytes())
      middle = len(data) // 2
      for i in range(middle, min(len(data), middle + count)):
        data[i] ^= 0xFF
      path.write_bytes(bytes(data))
      flipped += 1
  return flipped


def _copy(adult_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(adult_run[0], workdir, symlinks=True)
  return workdir


def test_a_damaged_newest_checkpoint_is_named_and_the_previous_one_used(adult_run, tmp_path):
  workdir = _copy(adult_run, tmp_path)
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [20, 30]
  assert _flip(workdir / "checkpoints" / "30") > 0
  result = run_cli("evaluate", "--config", SMOKE, "--workdir", workdir)
  assert "checkpoints/30 is damaged" in result.stderr
  summary = summary_of(result)
  assert summary["step"] == 20 and not math.isnan(summary["eval"]["auc"])
  exported = summary_of(run_cli("export", "--config", SMOKE, "--workdir", workdir,
                                "--output", tmp_path / "base"))
  assert exported["step"] == 20                   # never the damaged state
  _flip(workdir / "checkpoints" / "20")
  result = run_cli("evaluate", "--config", SMOKE, "--workdir", workdir, check=False)
  assert result.returncode == 2 and "every checkpoint is damaged" in result.stderr
  assert "Traceback" not in result.stderr


def test_a_checkpoint_of_a_changed_config_is_refused_naming_the_key(adult_run, tmp_path):
  workdir = _copy(adult_run, tmp_path)
  for override, named in (("--config.features.age.mean=40.0", "features.age.mean changed"),
                          ("--config.features.race.vocabulary=('Black','White',"
                           "'Asian-Pac-Islander','Amer-Indian-Eskimo','Other')",
                           "features.race.vocabulary changed"),
                          ("--config.features.occupation.hash_bucket_size=65",
                           "features.occupation.hash_bucket_size changed"),
                          ("--config.model.hidden=(64,32)", "model.hidden changed")):
    result = run_cli("train", "--config", SMOKE, "--workdir", workdir, override,
                     "--config.train.steps=40", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert named in result.stderr and "--init_from" in result.stderr
    result = run_cli("evaluate", "--config", SMOKE, "--workdir", workdir, override,
                     check=False)
    assert result.returncode == 2 and named in result.stderr
  # a warm start takes another run's state on purpose, changed config and all
  warm = summary_of(run_cli("train", "--config", SMOKE, "--workdir", tmp_path / "warm",
                            "--init_from", workdir, "--config.features.age.mean=40.0",
                            "--no-eval", "--no-export"))
  assert warm["steps"] == 30 and warm["resumed_from"] is None


def test_export_output_leaves_every_other_file_of_the_base_path_byte_identical(adult_run,
                                                                                tmp_path):
  base = tmp_path / "serving"
  (base / "1" / "variables").mkdir(parents=True)
  (base / "1" / "saved_model.pb").write_bytes(b"another model's graph")
  (base / "1" / "variables" / "variables.index").write_bytes(bytes(range(256)))
  (base / "README").write_text("the serving team's notes\n")
  (base / "notes").mkdir()
  (base / "notes" / "a.txt").write_text("kept")

  def digest():
    return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file() and not p.is_relative_to(
                base / "30")}

  before = digest()
  run_cli("export", "--config", SMOKE, "--workdir", adult_run[0], "--output", base)
  assert digest() == before
  assert (base / "30" / "saved_model.pb").exists()
  meaning = json.loads((base / "30" / "assets.extra" / "recjax_fingerprint.json").read_text())
  assert meaning["features.age.mean"] == 38.5816 and meaning["model.class"] == "WideDeep"


def test_labels_that_never_match_positive_stop_the_run_naming_the_values(tmp_path):
  result = run_cli("train", "--config", SMOKE, "--workdir", tmp_path / "run",
                   "--config.data.strip_whitespace=False", check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "every row of task 'label' has label 0 (no value is one of positive" in result.stderr
  assert "' >50K'" in result.stderr and "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists() or not any(
      (tmp_path / "run" / "checkpoints").iterdir())


BAD_CONFIGS = [
    ("--config.train.log_every=0", "train.log_every: 0 is not 1 or more"),
    ("--config.train.batch_size=0", "train.batch_size: 0 is not 1 or more"),
    ("--config.train.batch_size=-1", "train.batch_size: -1 is not 1 or more"),
    ("--config.train.checkpoint_every=0", "train.checkpoint_every: 0 is not 1 or more"),
    ("--config.train.steps=-5", "train.steps: -5 is negative"),
]


@pytest.mark.parametrize("override,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_a_value_that_would_crash_later_is_refused_before_any_work(tmp_path, override,
                                                                   message):
  result = run_cli("train", "--config", SMOKE, "--workdir", tmp_path / "run", override,
                   check=False)
  assert result.returncode == 2 and f"recjax: error: {message}" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_a_config_file_that_fails_to_load_is_named_with_its_line(tmp_path):
  cases = {"syntax.py": ("def get_config(arg=None):\n  return (\n", "syntax.py:2"),
           "raises.py": ("import ml_collections\n\ndef get_config(arg=None):\n"
                         "  raise ValueError(f'unknown config arg {arg!r}')\n",
                         "raises.py:4: get_config('fast'): ValueError: unknown config arg")}
  for name, (text, message) in cases.items():
    (tmp_path / name).write_text(text)
    result = run_cli("train", "--config", f"{tmp_path / name}:fast", "--workdir",
                     tmp_path / "run", check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-1500:]
    assert "Traceback" not in result.stderr
  result = run_cli("train", "--config", f"{ADULT_CONFIG}:fast", "--workdir", tmp_path / "run",
                   check=False)
  assert result.returncode == 2 and "unknown config arg 'fast'" in result.stderr


def test_rewritten_json_is_strict_and_a_truncated_evaluations_file_does_not_stop_a_resume(
    adult_run, tmp_path):
  from recjax import jsonio
  jsonio.write(tmp_path / "s.json", {"auc": float("nan"), "loss": 0.5, "all": [float("inf")]})
  assert json.loads((tmp_path / "s.json").read_text()) == {
      "auc": None, "auc_reason": "not a number (nan): e.g. one class in the labels",
      "loss": 0.5, "all": [None]}
  assert not list(tmp_path.glob(".*.tmp"))
  workdir = _copy(adult_run, tmp_path)
  text = (workdir / "evaluations.json").read_text()
  (workdir / "evaluations.json").write_text(text[: len(text) // 2])      # a torn write
  result = run_cli("train", "--config", SMOKE, "--workdir", workdir, "--config.train.steps=40",
                   "--config.train.progress_bar=False")
  assert "evaluations.json is unreadable" in result.stderr
  assert summary_of(result)["steps"] == 40
  json.loads((workdir / "evaluations.json").read_text())                 # whole again
  json.loads((workdir / "summary.json").read_text())


def test_a_corrupt_parquet_page_is_an_error_naming_the_file(tmp_path):
  import numpy as np
  import pyarrow as pa
  import pyarrow.parquet as pq
  from recjax import config as config_lib
  from recjax.errors import DataError
  from recjax.input import readers
  path = tmp_path / "rows.parquet"
  pq.write_table(pa.table({"x": np.arange(200_000, dtype=np.int64) * 7919 % 1_000_003}), path,
                 compression="snappy")
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 4096):
    data[i] ^= 0x5A
  path.write_bytes(bytes(data))
  spec = config_lib.DataSpec(format="parquet", train=(str(path),))
  with pytest.raises(DataError, match=r"rows.parquet: the file is damaged or unreadable"):
    readers.read(str(path), spec, ["x"], {"x"})


def test_an_unusable_workdir_or_output_is_named_before_any_data_is_read(adult_run, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a workdir")
  cases = [(("train", "--workdir", a_file), "is a file, not a directory"),
           (("train", "--workdir", a_file / "run"), "cannot be written"),
           (("evaluate", "--workdir", tmp_path / "missing"), "no such directory"),
           (("predict", "--workdir", adult_run[0], "--input", "unused.csv", "--output",
             tmp_path / "no" / "such" / "p.csv"), "is missing or not writable")]
  for args, message in cases:
    result = run_cli(args[0], "--config", SMOKE, *args[1:], check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-1500:]
    assert "Traceback" not in result.stderr
  assert a_file.read_text() == "not a workdir"


MORE_BAD = [
    ("--config.features.occupation.hash_bucket_size=0",
     "hash_bucket_size is 0 and there is no vocabulary"),
    ("--config.model.hidden=(0,)", "model.hidden: (0,) holds a width under 1"),
    ("--config.optimizer.dense.learning_rate=-1.0", "learning_rate -1.0 is not positive"),
]


@pytest.mark.parametrize("override,message", MORE_BAD, ids=[m for _, m in MORE_BAD])
def test_sizes_and_rates_that_would_crash_at_init_are_named(tmp_path, override, message):
  from recjax import config as config_lib
  from recjax.errors import ConfigError
  config = config_lib.load(SMOKE)
  config_lib.override(config, override[len("--config."):])
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    config_lib.experiment(config)

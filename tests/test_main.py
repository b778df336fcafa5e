"""The `recjax` command: train / evaluate / predict, kill-and-resume, and bad input."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from recjax import main as main_lib
from tests import dump_state
from tests.conftest import ADULT_CONFIG, ROOT, run_cli, summary_of

RESUME_ARGS = ("--config.train.steps=600", "--config.train.checkpoint_every=50",
               "--config.train.log_every=100", "--config.train.progress_bar=False", "--no-export")


def _finished_checkpoints(workdir):
  directory = workdir / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.exists() else []


def _dump(workdir):
  """The whole train state of `workdir`'s last checkpoint, as numpy arrays by tree path."""
  return dump_state.state_arrays(ADULT_CONFIG, workdir)[1]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  summary = summary_of(run_cli("train", "--config", ADULT_CONFIG, "--workdir", workdir, *RESUME_ARGS))
  return summary, _dump(workdir)


def _saving(workdir):
  """Whether Orbax is writing a checkpoint (its temporary directory exists) right now."""
  directory = workdir / "checkpoints"
  return directory.exists() and any("tmp" in p.name for p in directory.iterdir())


def _kill_plan(seed, kills=3, last=350, steps_between=50):
  """`kills` random kill points: a finished checkpoint to wait for (increasing, so each
  restart makes progress), then a random delay of up to about one save interval, except for
  one kill, drawn too, that waits for the next save to begin and lands in it."""
  rng = np.random.default_rng(seed)
  landmarks = sorted(rng.choice(np.arange(steps_between, last + 1, steps_between), kills,
                                replace=False).tolist())
  during_save = int(rng.integers(kills))
  return [dict(after=after, during_save=k == during_save,
               delay=0.0 if k == during_save else round(float(rng.uniform(0, 0.3)), 3))
          for k, after in enumerate(landmarks)]


def _wait(process, ready, what, seed, log, timeout=300):
  deadline = time.time() + timeout
  while not ready():
    assert process.poll() is None, (f"RECJAX_KILL_SEED={seed}: the run ended before {what}:\n"
                                    f"{log.read_text()[-4000:]}")
    assert time.time() < deadline, f"RECJAX_KILL_SEED={seed}: no {what} in {timeout} s"
    time.sleep(0.002)


def test_train_killed_resumes_and_ends_with_bitwise_the_parameters_of_a_straight_run(
    straight_run, tmp_path):
  """SIGKILL at several random points of one run, each followed by a restart, one of them
  while a checkpoint is being written (Orbax's temporary directory exists: the kill leaves
  it half-written); the run then finishes with bitwise the state of a run never killed
  (same state, same input position; CPU reductions are deterministic). The kill points come
  from RECJAX_KILL_SEED (random when unset, and printed): set it to replay a failure."""
  seed = int(os.environ.get("RECJAX_KILL_SEED") or random.SystemRandom().randrange(2**31))
  plan = _kill_plan(seed)
  print(f"RECJAX_KILL_SEED={seed}: {plan}")
  why = f"RECJAX_KILL_SEED={seed} {plan}"
  straight, straight_state = straight_run
  workdir = tmp_path / "killed"
  command = [sys.executable, "-m", "recjax.main", "train", "--config", ADULT_CONFIG,
             "--workdir", str(workdir), *RESUME_ARGS]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  resumed_from = None
  for k, kill in enumerate(plan):
    log = tmp_path / f"run{k}.log"
    with log.open("w") as out:
      process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
      try:
        # A checkpoint of this process's own (a restart may resume past the landmark), but
        # none so late that the run could end within the delay.
        after = min(max(kill["after"], (resumed_from or 0) + 50), 500)
        _wait(process, lambda: (_finished_checkpoints(workdir) or [0])[-1] >= after,
              f"checkpoint at step {after}", seed, log)
        if kill["during_save"]:
          _wait(process, lambda: _saving(workdir), "save after it", seed, log)
        else:
          time.sleep(kill["delay"])
      finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    saved = _finished_checkpoints(workdir)
    assert saved[-1] < 600, f"{why}: the run was not killed before its end: {saved}"
    if kill["during_save"]:
      assert _saving(workdir), f"{why}: kill {k} did not land during a save"
    if resumed_from is not None:
      assert f"resuming from the checkpoint at step {resumed_from}" in log.read_text(), why
    resumed_from = saved[-1]

  result = run_cli("train", "--config", ADULT_CONFIG, "--workdir", workdir, *RESUME_ARGS)
  resumed = summary_of(result)
  assert f"resuming from the checkpoint at step {resumed_from}" in result.stdout, why
  assert resumed["resumed_from"] == resumed_from and resumed["steps"] == 600, why
  assert resumed["eval"] == straight["eval"], why
  state = _dump(workdir)
  assert state.keys() == straight_state.keys()
  for key in state:
    np.testing.assert_array_equal(state[key], straight_state[key], err_msg=f"{key} ({why})")


def test_smoke_run_summary_tensorboard_evaluate_and_predict(adult_run, tmp_path):
  workdir, summary = adult_run
  assert summary["steps"] == 30 and summary["resumed_from"] is None
  assert summary["eval"]["examples"] == 16281
  assert 0.8 < summary["eval"]["auc"] < 1.0          # 30 steps of 256 rows already learn
  assert summary["examples_per_s"] > 0
  assert json.loads((workdir / "summary.json").read_text()) == summary
  assert (workdir / "checkpoints" / "30").is_dir()

  import tensorflow as tf
  tags = set()
  for event_file in (workdir / "tensorboard").iterdir():
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
      tags.update(v.tag for v in event.summary.value)
  assert {"train/loss", "train/examples_per_s", "eval/auc", "eval/accuracy"} <= tags

  evaluated = summary_of(run_cli("evaluate", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir))
  assert evaluated == {"step": 30, "eval": summary["eval"]}


def _fails(capsys, *args):
  with pytest.raises(SystemExit) as exit_:
    main_lib.main([str(a) for a in args])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  return err


def _no_checkpoint(workdir):
  return not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())


def test_bad_config_key_is_named_and_writes_nothing(tmp_path, capsys):
  err = _fails(capsys, "train", "--config", ADULT_CONFIG, "--workdir", tmp_path,
               "--config.train.setps=10")
  assert "recjax: error: --config.train.setps: no such key; did you mean 'steps'" in err
  assert _no_checkpoint(tmp_path)


def test_missing_data_file_is_named_and_writes_nothing(tmp_path, capsys):
  err = _fails(capsys, "train", "--config", ADULT_CONFIG, "--workdir", tmp_path,
               "--config.data.train=('/nonexistent/adult.csv',)")
  assert "recjax: error: data.train: no file matches '/nonexistent/adult.csv'" in err
  assert _no_checkpoint(tmp_path)


@pytest.mark.parametrize("line, message", [
    ("39, State-gov, 77516, Bachelors, 13", ":3: expected 15 fields, found 5"),
    ("39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
     "Male, 2174, 0, forty, United-States, <=50K", ":3: column 'hours_per_week' holds 'forty'"),
])
def test_bad_csv_rows_are_named_by_file_and_line_and_write_nothing(tmp_path, capsys, line, message):
  import gzip
  with gzip.open(ROOT / "data" / "adult" / "adult.data.gz", "rt") as f:
    good = [next(f) for _ in range(300)]
  data = tmp_path / "adult_bad.csv"
  data.write_text("".join(good[:2]) + line + "\n" + "".join(good[2:]))
  workdir = tmp_path / "workdir"
  err = _fails(capsys, "train", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir,
               f"--config.data.train=('{data}',)")
  assert f"recjax: error: {data}{message}" in err
  assert _no_checkpoint(workdir)


def _adult_with_bad_rows(tmp_path):
  """300 Adult rows with 6 bad ones between them, at known lines, and their counts by reason:
  the reasons a CSV row of this config can have (a wrong field count both ways)."""
  import gzip
  with gzip.open(ROOT / "data" / "adult" / "adult.data.gz", "rt") as f:
    good = [next(f) for _ in range(300)]

  def changed(row, field, value):
    fields = row.rstrip("\n").split(", ")
    fields[field] = value
    return ", ".join(fields) + "\n"

  bad = {3: ", ".join(good[0].split(", ")[:5]) + "\n",          # 5 fields of 15
         50: good[49].rstrip("\n") + ", extra\n",               # 16 fields
         100: changed(good[99], 12, "forty"),                    # hours_per_week
         150: changed(good[149], 0, "nan"),                      # age
         200: changed(good[199], 10, "inf"),                     # capital_gain
         250: changed(good[249], 2, "")}                         # fnlwgt
  lines = list(good)
  for line in sorted(bad):
    lines.insert(line - 1, bad[line])
  data = tmp_path / "adult_bad.csv"
  data.write_text("".join(lines))
  counts = {"empty_value": 1, "nan_or_inf": 2, "not_a_number": 1, "wrong_field_count": 2}
  return data, counts


def test_skipped_bad_rows_are_counted_by_reason_in_the_run_summary(tmp_path, capsys):
  """Issue 4, acceptance 3 through the command line: with data.bad_rows=skip the run trains
  on the good rows and its summary (printed and summary.json) counts the skipped ones by
  reason; past data.max_bad_fraction it stops with status 2, naming the count and the first."""
  data, counts = _adult_with_bad_rows(tmp_path)
  args = ["train", "--config", f"{ADULT_CONFIG}:smoke", "--no-eval", "--no-export",
          f"--config.data.train=('{data}',)", "--config.data.bad_rows=skip",
          "--config.train.steps=5", "--config.train.progress_bar=False"]
  workdir = tmp_path / "skip"
  main_lib.main([*args, "--workdir", str(workdir), "--config.data.max_bad_fraction=0.05"])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed["bad_rows"] == counts                  # 6 of 306 rows: under 5%
  assert printed["train_rows"] == 300 and printed["steps"] == 5
  assert np.isfinite(printed["loss"])
  assert json.loads((workdir / "summary.json").read_text()) == printed
  assert (workdir / "checkpoints" / "5").is_dir()

  stopped = tmp_path / "stop"
  err = _fails(capsys, *args, "--workdir", stopped, "--config.data.max_bad_fraction=0.01")
  assert (f"recjax: error: data.train: 6 of 306 rows are bad (1 empty_value, 2 nan_or_inf, "
          f"1 not_a_number, 2 wrong_field_count), more than data.max_bad_fraction=0.01; the "
          f"first: {data}:3: expected 15 fields, found 5") in err
  assert _no_checkpoint(stopped) and not (stopped / "summary.json").exists()


def test_evaluate_without_a_checkpoint_says_so(tmp_path, capsys):
  err = _fails(capsys, "evaluate", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", tmp_path)
  assert "no checkpoint to restore; run `recjax train` first" in err


# ---- model fields and prepared data: errors before any data file is opened ------------------

SASREC_SMOKE = f"{ROOT / 'configs' / 'movielens_sasrec.py'}:smoke"


def _record_opens(monkeypatch) -> list:
  """Every path that Python's open, gzip or pyarrow's CSV reader is asked for, from now on."""
  import builtins
  import gzip
  import pyarrow.csv as pa_csv
  opened = []
  for module, name in ((builtins, "open"), (gzip, "open"), (pa_csv, "read_csv"),
                       (pa_csv, "open_csv")):
    def recording(path, *args, _real=getattr(module, name), **kwargs):
      opened.append(str(getattr(path, "name", path)))
      return _real(path, *args, **kwargs)
    monkeypatch.setattr(module, name, recording)
  return opened


def test_bad_model_field_exits_2_naming_the_key_before_any_data_file_is_opened(
    tmp_path, capsys, monkeypatch):
  from recjax.datasets import movielens
  monkeypatch.setenv("RECJAX_PREPARED", str(tmp_path / "prepared"))
  data = movielens.files("smoke")             # present, so that reading them would succeed
  for path in data.values():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("user_id,history,movie_id\n1,1|2,3\n")
  opened = _record_opens(monkeypatch)
  err = _fails(capsys, "train", "--config", SASREC_SMOKE, "--workdir", tmp_path / "run",
               "--config.model.num_heads=3")      # the history group's dim is 50
  assert "recjax: error: model.num_heads: 3 heads do not split the 50 dims of group " in err
  assert not set(opened) & set(data.values()), opened
  assert not (tmp_path / "run").exists()


def test_absent_prepared_files_are_named_with_the_command_that_writes_them(
    tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("RECJAX_PREPARED", str(tmp_path / "prepared"))
  err = _fails(capsys, "train", "--config", SASREC_SMOKE, "--workdir", tmp_path / "run")
  assert (f"recjax: error: {tmp_path / 'prepared' / 'movielens' / 'smoke' / 'train.csv'}: "
          "prepared file not found; write it with "
          "`recjax prepare --dataset movielens --variant smoke`") in err
  assert not (tmp_path / "prepared").exists()


def test_prepare_writes_the_files_the_config_reads(tmp_path, capsys, monkeypatch):
  from recjax.datasets import amazon
  if not amazon.source().exists():
    pytest.skip(f"the Amazon Electronics sample is not at {amazon.source()} (the shared data "
                "root, $RECJAX_DATA, is not part of the repository)")
  monkeypatch.setenv("RECJAX_PREPARED", str(tmp_path / "prepared"))
  main_lib.main(["prepare", "--dataset", "amazon_electronics"])
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed == {"dataset": "amazon_electronics", "variant": "sample",
                     "files": amazon.files()}
  with open(amazon.files()["eval"]) as f:
    assert f.readline().strip() == ",".join(amazon.COLUMNS) and len(f.readlines()) == 32
  err = _fails(capsys, "prepare", "--dataset", "movielens", "--variant", "tiny")
  assert "--variant 'tiny': movielens has full, smoke" in err

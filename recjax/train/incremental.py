"""Daily incremental training against one joint run over the same days, on a synthetic world.

Production models are retrained every day from yesterday's workdir (`train.init_from`), and
issue 6 asks that this lose nothing against one run over all days at once. To measure it
the days must be one world (same teacher, different rows): `write_days` cuts a synthetic
source's train split into day files (Parquet, as real logs would be) and writes its eval
split as the common test set. `compare` then trains day by day, each day warm-started from
the day before with its optimizer state and trained on its own file only, and once jointly
over every file, and returns both AUCs. The benchmark (benchmarks/incremental.py) and the
test (tests/test_lifecycle.py) run this same procedure, at different sizes.
"""

import dataclasses
import pathlib

import numpy as np
import pyarrow.parquet as pq

from recjax.input import synthetic
from recjax.train import loop as train_lib
from recjax.errors import ConfigError


def write_days(experiment, directory, days: int) -> tuple[list[str], str]:
  """Writes `experiment`'s synthetic train split as `days` Parquet files of consecutive rows
  (day1.parquet, ...) and its eval split as eval.parquet; returns their paths."""
  world = experiment.data.synthetic
  if world is None:
    raise ConfigError("data.synthetic: day files are cut from a synthetic source; this "
                      f"experiment reads {experiment.data.format} files")
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  table = synthetic.generate(world, "train")
  paths = []
  for day, rows in enumerate(np.array_split(np.arange(table.num_rows), days)):
    paths.append(str(directory / f"day{day + 1}.parquet"))
    pq.write_table(table.slice(int(rows[0]), len(rows)), paths[-1])
  eval_path = str(directory / "eval.parquet")
  pq.write_table(synthetic.generate(world, "eval"), eval_path)
  return paths, eval_path


def on_files(experiment, train_files, eval_file: str, **train_keys):
  """`experiment` reading Parquet files instead of its synthetic source, with `train_keys`
  (epochs, seed, init_from, ...) replacing its train settings; no progress bar."""
  data = dataclasses.replace(experiment.data, format="parquet", synthetic=None,
                             train=tuple(train_files), eval=(eval_file,))
  train = dataclasses.replace(experiment.train, steps=0, progress_bar=False, **train_keys)
  return dataclasses.replace(experiment, data=data, train=train)


def incremental(experiment, day_files, eval_file: str, workdir, seed: int = 0,
                epochs: int = 1) -> list[dict]:
  """Trains day 1 from scratch into `workdir`/day1, then each later day from the one before
  (parameters and optimizer state) on its own file; the last day is evaluated. Returns each
  day's run summary."""
  summaries, previous = [], ""
  for day, file in enumerate(day_files):
    today = pathlib.Path(workdir) / f"day{day + 1}"
    exp = on_files(experiment, [file], eval_file, epochs=epochs, seed=seed,
                   init_from=str(previous), init_optimizer=True)
    summaries.append(train_lib.train_and_evaluate(exp, today, run_export=False,
                                                  run_eval=day == len(day_files) - 1))
    previous = today
  return summaries


def joint(experiment, day_files, eval_file: str, workdir, seed: int = 0,
          epochs: int = 1) -> dict:
  """Trains once over every day's file, shuffled together; returns the run summary."""
  exp = on_files(experiment, day_files, eval_file, epochs=epochs, seed=seed, init_from="")
  return train_lib.train_and_evaluate(exp, workdir, run_export=False)


def compare(experiment, day_files, eval_file: str, workdir, seed: int = 0,
            epochs: int = 1) -> dict:
  """Both ways with one seed: the AUC and log-loss of each, and the gap joint - incremental."""
  days = incremental(experiment, day_files, eval_file, pathlib.Path(workdir) / "incremental",
                     seed, epochs)
  together = joint(experiment, day_files, eval_file, pathlib.Path(workdir) / "joint", seed,
                   epochs)
  last, both = days[-1]["eval"], together["eval"]
  return {"seed": seed, "incremental_auc": last["auc"], "joint_auc": both["auc"],
          "auc_gap": both["auc"] - last["auc"],
          "incremental_log_loss": last["log_loss"], "joint_log_loss": both["log_loss"],
          "days": [{k: s.get(k) for k in ("train_rows", "steps", "new_ids", "new_id_share")}
                   for s in days]}

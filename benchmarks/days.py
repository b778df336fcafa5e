"""Daily incremental training against one joint run over the same days, on a synthetic world.

Issue 6 asks that training day by day (`recjax.train.incremental.train_days`) lose nothing
against one run over all days at once. To measure it the days must be one world (same
teacher, different rows): `write_days` cuts a synthetic source's train split into day files
(Parquet, as real logs would be) and writes its eval split as the common test set. `compare`
trains both ways and returns both AUCs. benchmarks/incremental.py and tests/train/test_lifecycle.py
run this same procedure, at different sizes.
"""

import pathlib

import numpy as np
import pyarrow.parquet as pq

from recjax.errors import ConfigError
from recjax.input import synthetic
from recjax.train import incremental
from recjax.train import loop as train_lib


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


def joint(experiment, day_files, eval_file: str, workdir, seed: int = 0,
          epochs: int = 1) -> dict:
  """Trains once over every day's file, shuffled together; returns the run summary."""
  exp = incremental.on_files(experiment, day_files, eval_file, epochs=epochs, seed=seed,
                             init_from="")
  return train_lib.train_and_evaluate(exp, workdir, run_export=False)


def compare(experiment, day_files, eval_file: str, workdir, seed: int = 0,
            epochs: int = 1) -> dict:
  """Both ways with one seed: the AUC and log-loss of each, and the gap joint - incremental."""
  days = incremental.train_days(experiment, day_files, eval_file,
                                pathlib.Path(workdir) / "incremental", seed, epochs)
  together = joint(experiment, day_files, eval_file, pathlib.Path(workdir) / "joint", seed,
                   epochs)
  last, both = days[-1]["eval"], together["eval"]
  return {"seed": seed, "incremental_auc": last["auc"], "joint_auc": both["auc"],
          "auc_gap": both["auc"] - last["auc"],
          "incremental_log_loss": last["log_loss"], "joint_log_loss": both["log_loss"],
          "days": [{k: s.get(k) for k in ("train_rows", "steps", "new_ids", "new_id_share")}
                   for s in days]}

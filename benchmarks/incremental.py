"""Daily incremental training against one run over all days, on a synthetic world with a teacher.

  python benchmarks/incremental.py [--rows 200000] [--days 2] [--seeds 1]

The synthetic source's train split is cut into `--days` Parquet files ("days" of one world:
same teacher, different rows) and its eval split is the test set. Incremental: day 1 trains
from scratch, each later day warm-starts from the day before (`init_from`, optimizer state
included) and trains one epoch on its own file only. Joint: one epoch over all files at once.
Prints one JSON line per (mode, seed) and the AUC gap, which issue 6 wants within 0.002.
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np
import pyarrow.parquet as pq

from recjax import config as config_lib
from recjax import synthetic
from recjax import train

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "configs" / "synthetic_all_features.py")


def _files(directory: pathlib.Path, rows: int, days: int) -> tuple[list[str], str]:
  config = config_lib.load(CONFIG)
  config_lib.override(config, f"data.synthetic.rows={rows}")
  world = config_lib.experiment(config).data.synthetic
  table = synthetic.generate(world, "train")
  paths = []
  for day, rows_of_day in enumerate(np.array_split(np.arange(table.num_rows), days)):
    paths.append(str(directory / f"day{day + 1}.parquet"))
    pq.write_table(table.slice(int(rows_of_day[0]), len(rows_of_day)), paths[-1])
  eval_path = str(directory / "eval.parquet")
  pq.write_table(synthetic.generate(world, "eval"), eval_path)
  return paths, eval_path


def _experiment(train_files, eval_file, seed: int, **train_keys):
  config = config_lib.load(CONFIG)
  with config.data.unlocked():
    del config.data["synthetic"]
  for item in ("data.format=parquet", f"data.train={tuple(train_files)!r}",
               f"data.eval=({eval_file!r},)", "train.epochs=1", f"train.seed={seed}",
               "train.progress_bar=False",
               *(f"train.{key}={value!r}" for key, value in train_keys.items())):
    config_lib.override(config, item)
  return config_lib.experiment(config)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rows", type=int, default=200_000)
  parser.add_argument("--days", type=int, default=2)
  parser.add_argument("--seeds", type=int, default=1)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    days, eval_file = _files(tmp, args.rows, args.days)
    for seed in range(args.seeds):
      workdir = None
      for day, file in enumerate(days):
        previous, workdir = workdir, tmp / f"seed{seed}" / f"day{day + 1}"
        experiment = _experiment([file], eval_file, seed, init_from=str(previous or ""),
                                 init_optimizer=True)
        summary = train.train_and_evaluate(experiment, workdir, run_export=False,
                                           run_eval=day == len(days) - 1)
        print(json.dumps({"mode": "incremental", "seed": seed, "day": day + 1,
                          "train_rows": summary["train_rows"], "steps": summary["steps"],
                          "new_ids": summary.get("new_ids"),
                          "new_id_share": summary.get("new_id_share")}), flush=True)
      incremental = summary["eval"]
      joint = train.train_and_evaluate(_experiment(days, eval_file, seed), tmp / f"seed{seed}" / "joint",
                                       run_export=False)["eval"]
      print(json.dumps({"seed": seed, "incremental_auc": incremental["auc"],
                        "joint_auc": joint["auc"],
                        "auc_gap": joint["auc"] - incremental["auc"],
                        "incremental_log_loss": incremental["log_loss"],
                        "joint_log_loss": joint["log_loss"]}), flush=True)


if __name__ == "__main__":
  main()

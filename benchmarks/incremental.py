"""Daily incremental training against one run over all days, on a synthetic world with a teacher.

  python benchmarks/incremental.py [--rows 200000] [--days 2] [--seeds 1] [--epochs 1]

The synthetic source's train split is cut into `--days` Parquet files ("days" of one world:
same teacher, different rows) and its eval split is the test set (benchmarks/days.py).
Incremental: day 1 trains from scratch, each later day warm-starts from the day before
(`init_from`, optimizer state included) and trains on its own file only. Joint: the same
epochs over all files at once. Prints one JSON line per seed with both AUCs and the gap,
which issue 6 wants within 0.002, then one with the gaps' mean, spread and largest size.
tests/train/test_lifecycle.py runs the same procedure on a small world.
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np

from recjax import config as config_lib
import days as days_lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "configs" / "synthetic_all_features.py")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default=CONFIG, help="a config with a synthetic source")
  parser.add_argument("--rows", type=int, default=200_000)
  parser.add_argument("--days", type=int, default=2)
  parser.add_argument("--seeds", type=int, default=1)
  parser.add_argument("--epochs", type=int, default=1)
  args = parser.parse_args()
  config = config_lib.load(args.config)
  config_lib.override(config, f"data.synthetic.rows={args.rows}")
  experiment = config_lib.experiment(config)
  gaps = []
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    day_files, eval_file = days_lib.write_days(experiment, tmp / "data", args.days)
    for seed in range(args.seeds):
      result = days_lib.compare(experiment, day_files, eval_file, tmp / f"seed{seed}", seed,
                                args.epochs)
      gaps.append(result["auc_gap"])
      print(json.dumps(result), flush=True)
  print(json.dumps({"rows": args.rows, "days": args.days, "epochs": args.epochs,
                    "seeds": args.seeds, "auc_gap_mean": float(np.mean(gaps)),
                    "auc_gap_std": float(np.std(gaps)),
                    "auc_gap_max_abs": float(np.max(np.abs(gaps)))}), flush=True)


if __name__ == "__main__":
  main()

"""Write the MovieLens-1M leave-one-out files (recjax.datasets.movielens) into a work directory.

  python benchmarks/movielens_prep.py [--out DIR] [--max_len 50] [--negatives 100] [--seed 0]

The configs (configs/movielens_*.py) read the files `recjax prepare --dataset movielens
--variant full|smoke` writes, so this script is only needed to write the files somewhere else
or with other parameters. The data may not be redistributed: never point --out into the
repository.
"""

import argparse
import json

from recjax.datasets import movielens


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(movielens.work_dir("full")))
  parser.add_argument("--max_len", type=int, default=50)
  parser.add_argument("--negatives", type=int, default=100)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--max_users", type=int, default=0, help="0: every user of the file")
  args = parser.parse_args()
  paths = movielens.prepare(args.out, max_len=args.max_len, num_negatives=args.negatives,
                            seed=args.seed, max_users=args.max_users)
  print(json.dumps(paths))


if __name__ == "__main__":
  main()

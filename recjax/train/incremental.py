"""Days trained one after another, each warm-started from the day before.

Production models are retrained every day from yesterday's workdir (`train.init_from`, with
`init_optimizer` the optimizer state too) on that day's data only. `train_days` does the same
over a list of day files: a backfill, or the incremental side of the comparison with one joint
run over all days (benchmarks/days.py, which benchmarks/incremental.py and
tests/train/test_lifecycle.py run at different sizes).
"""

import dataclasses
import pathlib

from recjax.train import loop as train_lib


def on_files(experiment, train_files, eval_file: str, **train_keys):
  """`experiment` reading Parquet files instead of its synthetic source, with `train_keys`
  (epochs, seed, init_from, ...) replacing its train settings; no progress bar."""
  data = dataclasses.replace(experiment.data, format="parquet", synthetic=None,
                             train=tuple(train_files), eval=(eval_file,))
  train = dataclasses.replace(experiment.train, steps=0, progress_bar=False, **train_keys)
  return dataclasses.replace(experiment, data=data, train=train)


def train_days(experiment, day_files, eval_file: str, workdir, seed: int = 0,
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

"""DIN's labelled rows from the Amazon Electronics review-log sample, written on request.

The sample (`small_samples/torchrechub_amazon_electronics_sample.csv` under the shared data
root: 100 reviews `user_id,item_id,time,cate_id` of 17 users) is a log, not labelled rows.
It is turned into DIN's rows the way the paper's (and torch-rechub's) Amazon preprocessing
does: per user in time order, each review after the first is a positive (label 1) whose
history is the user's earlier items and their categories, paired with a negative (label 0)
that has the same history and an item the user never reviewed; each user's last review is
the eval split. `recjax prepare --dataset amazon_electronics` (or `prepare`) writes them to
`paths.prepared("amazon_electronics", "sample")`; configs/amazon_din.py names those files.
"""

import csv
import os
import pathlib

import numpy as np

from recjax.datasets import paths
from recjax.errors import DataError

DATASET, VARIANT = "amazon_electronics", "sample"
VARIANTS = (VARIANT,)
SAMPLE = ("small_samples", "torchrechub_amazon_electronics_sample.csv")
MAX_LEN = 8
COLUMNS = ("user_id", "item_id", "cate_id", "hist_item_id", "hist_cate_id", "label")


def source() -> pathlib.Path:
  return paths.shared(*SAMPLE)


def files() -> dict[str, str]:
  """{"train": path, "eval": path} of the prepared rows, which may be absent."""
  folder = paths.prepared(DATASET, VARIANT)
  return {split: str(folder / f"{split}.csv") for split in ("train", "eval")}


def derived_rows(log_file=None, seed: int = 0) -> dict[str, list[tuple]]:
  """{"train": rows, "eval": rows} of COLUMNS from the review log (see the docstring)."""
  log_file = pathlib.Path(log_file or source())
  if not log_file.exists():
    raise DataError(f"{log_file}: the Amazon Electronics sample is absent (set "
                    f"{paths.DATA_ENV} to the folder that holds {SAMPLE[0]}/)")
  with open(log_file, newline="") as f:
    log = list(csv.DictReader(f))
  category = {r["item_id"]: r["cate_id"] for r in log}
  items = sorted(category, key=int)
  by_user = {}
  for order, r in enumerate(log):
    by_user.setdefault(r["user_id"], []).append((int(r["time"]), order, r["item_id"]))
  rng = np.random.default_rng(seed)
  out = {"train": [], "eval": []}
  for user, events in sorted(by_user.items(), key=lambda kv: int(kv[0])):
    seen = [item for _, _, item in sorted(events)]
    unseen = [i for i in items if i not in set(seen)]
    for i in range(1, len(seen)):
      history = seen[max(0, i - MAX_LEN):i]
      hist_items = "|".join(history)
      hist_cats = "|".join(category[h] for h in history)
      negative = unseen[rng.integers(len(unseen))]
      split = "eval" if i == len(seen) - 1 else "train"
      for item, label in ((seen[i], 1), (negative, 0)):
        out[split].append((user, item, category[item], hist_items, hist_cats, label))
  return out


def prepare(out: str | os.PathLike | None = None, log_file=None) -> dict[str, str]:
  """Writes train.csv and eval.csv into `out` (by default the folder `files` names)."""
  folder = pathlib.Path(out) if out else paths.prepared(DATASET, VARIANT)
  folder.mkdir(parents=True, exist_ok=True)
  written = {}
  for split, rows in derived_rows(log_file).items():
    path = folder / f"{split}.csv"
    tmp = folder / f".{split}.{os.getpid()}.csv"
    with open(tmp, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(COLUMNS)
      writer.writerows(rows)
    tmp.replace(path)            # atomic: a concurrent reader sees a whole file
    written[split] = str(path)
  return written


def prepare_variant(variant: str = VARIANT, source=None) -> dict[str, str]:
  """`recjax prepare --dataset amazon_electronics`: the one variant, where `files` names it."""
  if variant not in VARIANTS:
    raise ValueError(f"Amazon Electronics variant {variant!r}; valid: {', '.join(VARIANTS)}")
  return prepare(log_file=source)

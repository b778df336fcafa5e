"""DIN (or BST: the config arg) on the Amazon Electronics behaviour-log sample, smoke only.

  recjax train --config configs/amazon_din.py --workdir /tmp/recjax/amazon_din
  recjax train --config configs/amazon_din.py:bst,smoke --workdir /tmp/recjax/amazon_bst

The sample (../shared/data/small_samples/torchrechub_amazon_electronics_sample.csv, 100
reviews `user_id,item_id,time,cate_id` of 17 users) is a log, not labelled rows. It is turned
into DIN's rows the way the paper's (and torch-rechub's) Amazon preprocessing does: per user
in time order, each review after the first is a positive (label 1) whose history is the
user's earlier items and their categories, paired with a negative (label 0) that has the same
history and an item the user never reviewed; each user's last review is the eval split.
The derived CSVs are written once to a temporary folder. With 99 distinct items in 100
reviews nothing generalises: this proves the path from a real log to a served DIN, not
accuracy. `:smoke` trains 10 steps.
"""

import csv
import pathlib
import tempfile

import ml_collections
import numpy as np

SOURCE = (pathlib.Path(__file__).resolve().parent.parent.parent / "shared" / "data" /
          "small_samples" / "torchrechub_amazon_electronics_sample.csv")
MAX_LEN = 8
COLUMNS = ("user_id", "item_id", "cate_id", "hist_item_id", "hist_cate_id", "label")
MODELS = {"din": dict(name="din", attention_hidden=(16,), hidden=(32, 16), activation="dice",
                      other_groups=("profile",)),
          "bst": dict(name="bst", num_heads=2, head_dim=8, ffn_dim=16, position_dim=4,
                      hidden=(32,), other_groups=("profile",))}


def derived_rows(source=SOURCE, seed: int = 0) -> dict[str, list[tuple]]:
  """{"train": rows, "eval": rows} of COLUMNS from the review log (see the docstring)."""
  with open(source, newline="") as f:
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


def _files() -> dict[str, str]:
  if not SOURCE.exists():
    raise FileNotFoundError(f"configs/amazon_din.py reads {SOURCE}, which is absent")
  folder = pathlib.Path(tempfile.gettempdir()) / "recjax_amazon_din"
  folder.mkdir(exist_ok=True)
  paths = {split: folder / f"{split}.csv" for split in ("train", "eval")}
  if not all(p.exists() for p in paths.values()):
    for split, rows in derived_rows().items():
      tmp = folder / f".{split}.{np.random.default_rng().integers(1 << 30)}.csv"
      with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
      tmp.replace(paths[split])            # atomic: a concurrent reader sees a whole file
  return {split: str(p) for split, p in paths.items()}


def get_config(arg=None):
  parts = (arg or "").split(",")
  model = parts[0] if parts[0] and parts[0] != "smoke" else "din"
  if model not in MODELS or any(p not in ("", "smoke") for p in parts[1:]):
    raise ValueError(f"unknown config arg {arg!r}; valid: din | bst, then ',smoke'")
  files = _files()
  config = ml_collections.ConfigDict()
  config.data = dict(format="csv", train=(files["train"],), eval=(files["eval"],))
  config.label = dict(column="label")
  config.features = dict(
      user_id=dict(kind="id", hash_bucket_size=64),
      item_id=dict(kind="id", hash_bucket_size=1024),
      cate_id=dict(kind="id", hash_bucket_size=256),
      hist_item_id=dict(kind="sequence", max_len=MAX_LEN, hash_bucket_size=1024,
                        table="item_id"),
      hist_cate_id=dict(kind="sequence", max_len=MAX_LEN, hash_bucket_size=256,
                        aligned_with="hist_item_id", table="cate_id"))
  config.groups = dict(
      target=dict(features=("item_id", "cate_id"), dim=8),
      history=dict(features=("hist_item_id", "hist_cate_id"), dim=8, combiner="none",
                   tables_from="target"),
      profile=dict(features=("user_id",), dim=8))
  config.model = MODELS[model]
  config.train = dict(batch_size=32, epochs=5, eval_batch_size=64, seed=0, log_every=10,
                      checkpoint_every=100)
  config.optimizer = dict(dense=dict(name="adam", learning_rate=1e-3),
                          sparse=dict(name="rowwise_adagrad", learning_rate=0.05))
  config.export = dict(enabled=True)
  if "smoke" in parts:
    config.train.update(steps=10, checkpoint_every=10)
  return config

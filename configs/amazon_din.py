"""DIN (or BST: the config arg) on the Amazon Electronics behaviour-log sample, smoke only.

  recjax prepare --dataset amazon_electronics
  recjax train --config configs/amazon_din.py --workdir /tmp/recjax/amazon_din
  recjax train --config configs/amazon_din.py:bst,smoke --workdir /tmp/recjax/amazon_bst

The sample (small_samples/torchrechub_amazon_electronics_sample.csv under the shared data
root, 100 reviews of 17 users) is a log, not labelled rows: `recjax prepare` turns it into
DIN's rows (each review after a user's first a positive with the earlier items as history,
paired with a negative; each user's last review the eval split; `recjax.datasets.amazon`)
and writes them outside the repository. Loading the config writes nothing and needs no
data. With 99 distinct items in 100 reviews nothing generalises: this proves the path from
a real log to a served DIN, not accuracy. `:smoke` trains 10 steps.
"""

import ml_collections

from recjax.datasets import amazon

MAX_LEN = amazon.MAX_LEN          # the history the prepared rows hold
MODELS = {"din": dict(name="din", attention_hidden=(16,), hidden=(32, 16), activation="dice",
                      other_groups=("profile",)),
          "bst": dict(name="bst", num_heads=2, head_dim=8, ffn_dim=16, position_dim=4,
                      hidden=(32,), other_groups=("profile",))}


def get_config(arg=None):
  parts = (arg or "").split(",")
  model = parts[0] if parts[0] and parts[0] != "smoke" else "din"
  if model not in MODELS or any(p not in ("", "smoke") for p in parts[1:]):
    raise ValueError(f"unknown config arg {arg!r}; valid: din | bst, then ',smoke'")
  files = amazon.files()                     # written by `recjax prepare`
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

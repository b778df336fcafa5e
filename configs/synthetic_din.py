"""DIN, BST or the DNN baseline on the synthetic behaviour-sequence source (recjax/input/synthetic.py
`sequence` schema: a user's last 20 items and their categories, the candidate item, tags, a
price and a user vector; labels from the hidden teacher). The model is the config arg
(din | bst | dnn), `smoke` may follow after a comma.

  recjax train --config configs/synthetic_din.py:din --workdir /tmp/recjax/synthetic_din
  recjax train --config configs/synthetic_din.py:bst,smoke --workdir /tmp/recjax/smoke

DIN and BST compare the candidate (`target`: item id and category) with each history item
(`history`: a sequence group that reads the target's tables through `tables_from`, so an
item has one embedding wherever it appears). The DNN baseline sees the same features with the
history sum-pooled in one group (the history features share the candidate's tables there
too). Eval AUCs on 50,000 rows are in the README's model table (benchmarks/accuracy.py).
`:smoke` trains 20 steps on 2,048 rows.
"""

import ml_collections

CATEGORIES = tuple(f"k{i}" for i in range(500))      # hist_cat / cat values of the schema
ITEM_BUCKETS = 100_000                               # 50,000 items hashed
MODELS = {
    "din": dict(name="din", attention_hidden=(64, 32), hidden=(128, 64), activation="dice",
                other_groups=("profile",)),
    "bst": dict(name="bst", num_heads=2, head_dim=16, ffn_dim=64, position_dim=8,
                hidden=(128, 64), other_groups=("profile",)),
    "dnn": dict(name="dnn", hidden=(128, 64), deep_group="deep"),
}


def features() -> dict:
  return dict(
      user=dict(kind="identity", num_buckets=20000),
      item_id=dict(kind="id", column="item", hash_bucket_size=ITEM_BUCKETS),
      cat=dict(kind="id", vocabulary=CATEGORIES, num_oov_buckets=1),
      hist_item=dict(kind="sequence", max_len=20, hash_bucket_size=ITEM_BUCKETS,
                     table="item_id"),
      hist_cat=dict(kind="sequence", max_len=20, vocabulary=CATEGORIES, num_oov_buckets=1,
                    aligned_with="hist_item", table="cat"),
      tags=dict(kind="tag", max_len=5, weighted=True, hash_bucket_size=2048),
      cat_ctr=dict(kind="lookup", map_column="cat_ctr", key_column="cat", default=-0.5),
      price=dict(kind="numeric", log1p=True, mean=3.0, std=1.0),
      user_vec=dict(kind="numeric", dim=8),
  )


def groups(model: str) -> dict:
  if model == "dnn":
    return dict(deep=dict(features=("item_id", "cat", "hist_item", "hist_cat", "user", "tags"),
                          dim=16, combiner="sum"))
  return dict(
      target=dict(features=("item_id", "cat"), dim=16),
      history=dict(features=("hist_item", "hist_cat"), dim=16, combiner="none",
                   tables_from="target"),
      profile=dict(features=("user", "tags"), dim=16, combiner="mean"))


def get_config(arg=None):
  parts = (arg or "").split(",")
  model = parts[0] if parts[0] and parts[0] != "smoke" else "din"
  if model not in MODELS or any(p not in ("", "smoke") for p in parts[1:]):
    raise ValueError(f"unknown config arg {arg!r}; valid: din | bst | dnn, then ',smoke'")
  config = ml_collections.ConfigDict()
  config.data = dict(format="synthetic", synthetic=dict(
      rows=200_000, eval_rows=50_000, seed=1, columns="sequence", base_rate=0.25, signal=2.0))
  config.label = dict(column="label")
  config.features = features()
  config.groups = groups(model)
  config.model = MODELS[model]
  config.train = dict(batch_size=512, epochs=3, eval_batch_size=4096, seed=0,
                      log_every=100, checkpoint_every=1000)
  config.optimizer = dict(
      dense=dict(name="adam", learning_rate=1e-3),
      sparse=dict(name="rowwise_adagrad", learning_rate=0.05))
  config.export = dict(enabled=True)
  if "smoke" in parts:
    config.data.synthetic.update(rows=2048, eval_rows=1024)
    config.train.update(batch_size=256, steps=20, log_every=10, checkpoint_every=20,
                        eval_batch_size=512)
  return config

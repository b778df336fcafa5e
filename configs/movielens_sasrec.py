"""SASRec next-item recall on MovieLens-1M (the users of the shared data), leave-one-out.

  recjax prepare --dataset movielens --variant full
  recjax train --config configs/movielens_sasrec.py --workdir /tmp/recjax/movielens_sasrec

The leave-one-out files are written once, before training, by `recjax prepare --dataset
movielens --variant full` (`--variant smoke` for `:smoke`), outside the repository
(`recjax.datasets.movielens`); loading the config writes nothing. The eval split is every
user's last item with 100 sampled unrated movies (HR@10, NDCG@10; Kang & McAuley report 0.824 / 0.590 on the full
ML-1M, not comparable to the 2,999-user file here) and full-corpus recall@10/50 with the
user's train items excluded. `:smoke` uses the first 40 users and trains 30 steps.

Measured (seed 0, 2 busy CPU cores): 2 epochs (3,762 steps, about 21 minutes) reach
HR@10 0.804, NDCG@10 0.604 and full-corpus recall@50 0.534 (recall@10 0.281); 1 epoch
HR@10 0.791, NDCG@10 0.582, recall@50 0.498.
"""

import ml_collections

from recjax.datasets import movielens

MAX_LEN = 50          # the history window (the paper: 200 on ML-1M)
DIM = 50              # the paper's d


def get_config(arg=None):
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; valid: smoke")
  smoke = arg == "smoke"
  paths = movielens.files("smoke" if smoke else "full")     # written by `recjax prepare`
  config = ml_collections.ConfigDict()
  config.data = dict(format="csv", train=(paths["train.csv"],), eval=(paths["eval.csv"],))
  config.tasks = dict(next_item=dict(
      loss="in_batch_softmax", label="movie_id", item_feature="movie_id", temperature=1.0,
      retrieval=dict(corpus=(paths["items.csv"],), item_key="movie_id",
                     candidates="negatives", seen="seen", sampled_ks=(10,), full_ks=(10, 50))))
  config.features = dict(
      history=dict(kind="sequence", max_len=MAX_LEN, vocabulary=movielens.MOVIE_IDS,
                   table="movie"),
      movie_id=dict(kind="id", vocabulary=movielens.MOVIE_IDS, table="movie"),
  )
  # the target item reads the history's table: one item embedding, as in the paper
  config.groups = dict(
      history=dict(features=("history",), dim=DIM, combiner="none", init_scale=0.05),
      item=dict(features=("movie_id",), dim=DIM, tables_from="history"))
  config.model = dict(name="sasrec", num_blocks=2, num_heads=1)
  config.train = dict(batch_size=256, epochs=2, eval_batch_size=1024, seed=0, log_every=200,
                      checkpoint_every=2000, early_stop_metric="hr@10")
  config.optimizer = dict(
      dense=dict(name="adam", learning_rate=1e-3),
      sparse=dict(name="adam", learning_rate=1e-3))
  config.export = dict(enabled=True)
  if smoke:
    config.train.update(steps=30, batch_size=64, log_every=10, checkpoint_every=20)
  return config

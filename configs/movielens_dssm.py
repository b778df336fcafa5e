"""DSSM two-tower recall on MovieLens-1M (the users of the shared data), leave-one-out.

  recjax prepare --dataset movielens --variant full
  recjax train --config configs/movielens_dssm.py --workdir /tmp/recjax/movielens_dssm

The user tower reads the user's profile and the mean of the movies watched before; the item
tower a movie's id, genres and year. Trained with in-batch softmax and the log-Q correction
on (user before t, movie at t) rows; evaluated by full-corpus retrieval over all 3,883
movies (recall@50, the user's train movies excluded) and by HR@10 / NDCG@10 against the same
100 sampled negatives as SASRec. The leave-one-out files are written once, before training,
by `recjax prepare --dataset movielens --variant full` (`--variant smoke` for `:smoke`), outside
the repository (`recjax.datasets.movielens`); loading the config writes nothing.
`:smoke` uses 40 users and trains 30 steps.

Measured (seed 0, 2 busy CPU cores): 6 epochs (5,640 steps, about 5 minutes) reach
recall@50 0.431 (recall@10 0.175) over the full corpus and HR@10 0.767 / NDCG@10 0.526
against the sampled negatives; 1 epoch 0.325, 3 epochs 0.390.
"""

import ml_collections

from recjax.datasets import movielens

MAX_LEN = 50


def get_config(arg=None):
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; valid: smoke")
  smoke = arg == "smoke"
  paths = movielens.files("smoke" if smoke else "full")     # written by `recjax prepare`
  config = ml_collections.ConfigDict()
  config.data = dict(format="csv", train=(paths["train.csv"],), eval=(paths["eval.csv"],))
  config.tasks = dict(match=dict(
      loss="in_batch_softmax", label="movie_id", item_feature="movie_id", temperature=0.05,
      retrieval=dict(corpus=(paths["items.csv"],), item_key="movie_id",
                     candidates="negatives", seen="seen", sampled_ks=(10,), full_ks=(10, 50))))
  config.features = dict(
      user_id=dict(kind="identity", num_buckets=6041),
      gender=dict(kind="id", vocabulary=("F", "M")),
      age=dict(kind="id", vocabulary=("1", "18", "25", "35", "45", "50", "56")),
      occupation=dict(kind="identity", num_buckets=21),
      zip=dict(kind="id", hash_bucket_size=4096),
      history=dict(kind="sequence", max_len=MAX_LEN, vocabulary=movielens.MOVIE_IDS),
      movie_id=dict(kind="id", vocabulary=movielens.MOVIE_IDS),
      genres=dict(kind="tag", max_len=6, vocabulary=movielens.GENRES),
      year=dict(kind="id", hash_bucket_size=128),
  )
  config.groups = dict(
      user=dict(features=("user_id", "gender", "age", "occupation", "zip"), dim=32),
      watched=dict(features=("history",), dim=32, combiner="mean"),
      item=dict(features=("movie_id", "genres", "year"), dim=32, combiner="mean"))
  config.model = dict(name="dssm", user_groups=("user", "watched"), item_groups=("item",),
                      dense_tower="none", hidden=(256,), dim=64)
  config.train = dict(batch_size=512, epochs=6, eval_batch_size=1024, seed=0, log_every=200,
                      checkpoint_every=2000, early_stop_metric="recall@50")
  config.optimizer = dict(
      dense=dict(name="adam", learning_rate=1e-3),
      sparse=dict(name="adam", learning_rate=1e-3))
  config.export = dict(enabled=True)
  if smoke:
    config.train.update(steps=30, batch_size=64, log_every=10, checkpoint_every=20)
  return config

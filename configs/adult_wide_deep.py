"""Wide & Deep on UCI Adult (bundled in data/adult): predict income over 50K.

  recjax train --config configs/adult_wide_deep.py --workdir /tmp/recjax/adult_wide_deep

Reaches accuracy about 0.855 and AUC about 0.91 on the official 16,281-row test split in
well under a minute on 2 CPU cores. `:smoke` trains 30 steps on the same files.
"""

import pathlib

import ml_collections

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "adult"

COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
           "occupation", "relationship", "race", "gender", "capital_gain", "capital_loss",
           "hours_per_week", "native_country", "income_bracket")

CATEGORICAL = ("workclass", "education", "marital_status", "occupation", "relationship", "race",
               "gender", "native_country", "age_bucket")


def features() -> dict:
  """Adult's columns as features; means and stds are those of the training split."""
  return dict(
      age=dict(kind="numeric", mean=38.5816, std=13.6402),
      fnlwgt=dict(kind="numeric", log1p=True, mean=11.9838, std=0.6307),
      education_num=dict(kind="numeric", mean=10.0807, std=2.5727),
      capital_gain=dict(kind="numeric", log1p=True, mean=0.7346, std=2.4547),
      capital_loss=dict(kind="numeric", log1p=True, mean=0.3503, std=1.5846),
      hours_per_week=dict(kind="numeric", mean=40.4375, std=12.3472),
      gender=dict(kind="id", vocabulary=("Female", "Male")),
      race=dict(kind="id", vocabulary=("White", "Black", "Asian-Pac-Islander",
                                       "Amer-Indian-Eskimo", "Other")),
      relationship=dict(kind="id", vocabulary=("Husband", "Not-in-family", "Own-child",
                                               "Unmarried", "Wife", "Other-relative")),
      marital_status=dict(kind="id", vocabulary=(
          "Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed",
          "Married-spouse-absent", "Married-AF-spouse")),
      workclass=dict(kind="id", vocabulary=(
          "Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
          "State-gov", "Without-pay", "Never-worked")),
      age_bucket=dict(kind="id", column="age",
                      boundaries=(18., 25., 30., 35., 40., 45., 50., 55., 60., 65.)),
      education=dict(kind="id", hash_bucket_size=64),
      occupation=dict(kind="id", hash_bucket_size=64),
      native_country=dict(kind="id", hash_bucket_size=128),
  )


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.data = dict(
      format="csv", train=(str(DATA / "adult.data.gz"),), eval=(str(DATA / "adult.test.gz"),),
      columns=COLUMNS, header=False, delimiter=",", strip_whitespace=True)
  config.label = dict(column="income_bracket", positive=(">50K", ">50K."))
  config.features = features()
  config.groups = dict(
      wide=dict(features=CATEGORICAL, dim=1, init_scale=0.0),
      deep=dict(features=CATEGORICAL, dim=16, init_scale=0.05))
  config.model = dict(name="wide_deep", hidden=(128, 64))
  config.train = dict(batch_size=256, epochs=10, eval_batch_size=4096, seed=0,
                      log_every=100, checkpoint_every=500)
  config.optimizer = dict(
      dense=dict(name="adam", learning_rate=1e-3),
      sparse=dict(name="rowwise_adagrad", learning_rate=0.05))
  config.export = dict(enabled=True)
  if arg == "smoke":
    config.train.update(steps=30, log_every=10, checkpoint_every=20)
  elif arg:
    raise ValueError(f"unknown config arg {arg!r}; valid: smoke")
  return config

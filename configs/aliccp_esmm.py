"""ESMM on the Ali-CCP sample (Taobao impressions with click and purchase labels; the data of
the ESMM paper, Ma et al. 2018), smoke size only: the 99-row train and 49-row validation
samples of torch-rechub in small_samples/ of the shared data root ($RECJAX_DATA).

  recjax train --config configs/aliccp_esmm.py --workdir /tmp/recjax/aliccp_esmm

Tasks over the entire impression space: `ctr` (click) and `ctcvr` (click and purchase: a
purchase row is always a click row). `cvr` reads the CVR tower's output with weight 0: it is
exported for serving and evaluated against purchase, but has no loss, as in the paper, where
the CVR tower learns only through pCTCVR = pCTR x pCVR. The samples are far too small for
figures of any value (one purchase in each file); the config proves the wiring.
"""

import ml_collections

from recjax.datasets import paths

DATA = paths.shared("small_samples")          # $RECJAX_DATA, by default ../shared/data

# torch-rechub's label-encoded Ali-CCP fields: ids (the feature field numbers of the paper's
# release) and their numeric companions (D...: values already in [0, 1]).
ID_COLUMNS = ("101", "121", "122", "124", "125", "126", "127", "128", "129", "205", "206",
              "207", "210", "216", "508", "509", "702", "853", "301", "109_14", "110_14",
              "127_14", "150_14")
DENSE_COLUMNS = ("D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853")


def get_config(arg=None):
  if arg not in (None, "smoke"):
    raise ValueError(f"unknown config arg {arg!r}; valid: smoke (the config is smoke size)")
  config = ml_collections.ConfigDict()
  config.data = dict(format="csv", train=(str(DATA / "torchrechub_ali_ccp_train_sample.csv"),),
                     eval=(str(DATA / "torchrechub_ali_ccp_val_sample.csv"),), header=True)
  config.tasks = dict(
      ctr=dict(label="click"),
      ctcvr=dict(label="purchase"),
      cvr=dict(label="purchase", weight=0.0))
  config.features = {
      **{f"f{c}": dict(kind="id", column=c, hash_bucket_size=512) for c in ID_COLUMNS},
      **{f"f{c}": dict(kind="numeric", column=c) for c in DENSE_COLUMNS}}
  config.groups = dict(deep=dict(features=tuple(f"f{c}" for c in ID_COLUMNS), dim=8))
  config.model = dict(name="esmm", hidden=(64, 32), tasks=("ctr", "ctcvr"), cvr_output="cvr")
  config.train = dict(batch_size=32, steps=12, eval_batch_size=64, seed=0, log_every=4,
                      checkpoint_every=1000, early_stop_metric="ctcvr/auc")
  config.optimizer = dict(
      dense=dict(name="adam", learning_rate=1e-3),
      sparse=dict(name="rowwise_adagrad", learning_rate=0.05))
  config.export = dict(enabled=True)
  return config

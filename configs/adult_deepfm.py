"""DeepFM on UCI Adult (bundled in data/adult), the same features as adult_wide_deep.

  recjax train --config configs/adult_deepfm.py --workdir /tmp/recjax/adult_deepfm

Reaches accuracy about 0.855 on the official test split. `:smoke` trains 30 steps.
"""

import pathlib

from recjax import config as config_lib


def get_config(arg=None):
  config = config_lib.load(f"{pathlib.Path(__file__).with_name('adult_wide_deep.py')}:{arg or ''}")
  with config.unlocked():
    config.model = dict(name="deepfm", hidden=(128, 64), first_order_group="wide", fm_group="deep")
  return config

"""DCN-V2 on UCI Adult (bundled in data/adult), the same features as adult_wide_deep.

  recjax train --config configs/adult_dcnv2.py --workdir /tmp/recjax/adult_dcnv2

Stacked cross network (3 full-rank layers) then an MLP. Reaches accuracy about 0.856 and
AUC about 0.910 on the official test split (median of 3 seeds, benchmarks/accuracy.py) in
about 10 s on 2 CPU cores. `:smoke` trains 30 steps.
"""

import pathlib

from recjax import config as config_lib


def get_config(arg=None):
  config = config_lib.load(f"{pathlib.Path(__file__).with_name('adult_wide_deep.py')}:{arg or ''}")
  with config.unlocked():
    config.model = dict(name="dcnv2", cross_layers=3, low_rank=0, structure="stacked",
                        hidden=(128, 64), deep_group="deep")
  return config

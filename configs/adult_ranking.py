"""Any ranking model of the zoo on UCI Adult (bundled in data/adult), the features of
adult_wide_deep; the model is the config arg, `smoke` may follow after a comma.

  recjax train --config configs/adult_ranking.py:xdeepfm --workdir /tmp/recjax/adult_xdeepfm
  recjax train --config configs/adult_ranking.py:autoint,smoke --workdir /tmp/recjax/smoke

Every model reads the `wide` group (dim 1) and/or the `deep` group (dim 16) by its defaults.
Accuracies (median of 3 seeds, official test split) are in the README's model table; all
reach about 0.85 in well under a minute on 2 CPU cores (benchmarks/accuracy.py).
"""

import pathlib

from recjax import config as config_lib

MODELS = {
    "lr": dict(),
    "fm": dict(),
    "wide_deep": dict(hidden=(128, 64)),
    "dnn": dict(hidden=(128, 64)),
    "deepfm": dict(hidden=(128, 64)),
    "xdeepfm": dict(cin_layers=(64, 64), hidden=(128, 64)),
    "dcn": dict(cross_layers=3, hidden=(128, 64)),
    "dcnv2": dict(cross_layers=3, structure="stacked", hidden=(128, 64)),
    "autoint": dict(attention_layers=2, num_heads=2, head_dim=16),
    "fibinet": dict(hidden=(128, 64)),
    "masknet": dict(block_sizes=(32,), structure="serial"),   # wider or deeper overfits Adult
    "dlrm": dict(bottom=(64,), top=(128, 64)),
}


def get_config(arg=None):
  parts = (arg or "").split(",")
  model = parts[0] if parts[0] and parts[0] != "smoke" else "dcnv2"
  if model not in MODELS:
    raise ValueError(f"unknown model {model!r}; valid: {', '.join(MODELS)}")
  smoke = "smoke" if "smoke" in parts else ""
  config = config_lib.load(f"{pathlib.Path(__file__).with_name('adult_wide_deep.py')}:{smoke}")
  with config.unlocked():
    config.model = dict(name=model, **MODELS[model])
    if model == "lr":      # one linear layer on the numeric features: a larger step converges
      config.optimizer.dense.learning_rate = 1e-2
  return config

"""The model zoo: a plain dict from config name to Flax module class.

A model's Flax fields are its config (validated by `recjax.config`); each module file also
defines a `tiny` preset. Every model maps ({group: [B, F, D]}, dense [B, Dn]) to a dict of
logits per task, [B] each.
"""

from recjax.models import deepfm
from recjax.models import wide_deep

MODELS = {
    "wide_deep": wide_deep.WideDeep,
    "deepfm": deepfm.DeepFM,
}

TINY = {
    "wide_deep": wide_deep.tiny,
    "deepfm": deepfm.tiny,
}

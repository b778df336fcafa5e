"""The model zoo: a plain dict from config name to Flax module class.

A model's Flax fields are its config (validated by `recjax.config`); each module file also
defines a `tiny` preset. Every model maps ({group: [B, F, D]}, dense [B, Dn]) to a dict of
logits per task, [B] each. A new model is one file here plus one line in each dict (or no
line at all: a config may name `package.module:Class`, see `recjax.config.model_class`).
"""

from recjax.models import autoint
from recjax.models import bst
from recjax.models import dcn
from recjax.models import dcnv2
from recjax.models import deepfm
from recjax.models import din
from recjax.models import dlrm
from recjax.models import dnn
from recjax.models import dssm
from recjax.models import esmm
from recjax.models import fibinet
from recjax.models import fm
from recjax.models import lr
from recjax.models import masknet
from recjax.models import mmoe
from recjax.models import ple
from recjax.models import sasrec
from recjax.models import shared_bottom
from recjax.models import wide_deep
from recjax.models import xdeepfm

MODELS = {
    "lr": lr.LR,
    "fm": fm.FM,
    "wide_deep": wide_deep.WideDeep,
    "dnn": dnn.DNN,
    "deepfm": deepfm.DeepFM,
    "xdeepfm": xdeepfm.XDeepFM,
    "dcn": dcn.DCN,
    "dcnv2": dcnv2.DCNv2,
    "autoint": autoint.AutoInt,
    "fibinet": fibinet.FiBiNET,
    "masknet": masknet.MaskNet,
    "dlrm": dlrm.DLRM,
    "din": din.DIN,
    "bst": bst.BST,
    "dssm": dssm.DSSM,
    "sasrec": sasrec.SASRec,
    "shared_bottom": shared_bottom.SharedBottom,
    "mmoe": mmoe.MMoE,
    "ple": ple.PLE,
    "esmm": esmm.ESMM,
}

TINY = {
    "lr": lr.tiny,
    "fm": fm.tiny,
    "wide_deep": wide_deep.tiny,
    "dnn": dnn.tiny,
    "deepfm": deepfm.tiny,
    "xdeepfm": xdeepfm.tiny,
    "dcn": dcn.tiny,
    "dcnv2": dcnv2.tiny,
    "autoint": autoint.tiny,
    "fibinet": fibinet.tiny,
    "masknet": masknet.tiny,
    "dlrm": dlrm.tiny,
    "din": din.tiny,
    "bst": bst.tiny,
    "dssm": dssm.tiny,
    "sasrec": sasrec.tiny,
    "shared_bottom": shared_bottom.tiny,
    "mmoe": mmoe.tiny,
    "ple": ple.tiny,
    "esmm": esmm.tiny,
}

"""The model zoo: a plain dict from config name to the Flax module that implements it.

A model's Flax fields are its config (validated by `recjax.config`); each module file also
defines a `tiny` preset, which `TINY` collects. Every model maps ({group: [B, F, D]},
dense [B, Dn]) to a dict of logits per task, [B] each. A new model is one file here plus one
line in `REGISTRY` (or no line at all: a config may name `package.module:Class`, see
`recjax.config.model_class`).
"""

import importlib

# config name -> "module:Class" in recjax/models/
REGISTRY = {
    "lr": "lr:LR",
    "fm": "fm:FM",
    "wide_deep": "wide_deep:WideDeep",
    "dnn": "dnn:DNN",
    "deepfm": "deepfm:DeepFM",
    "xdeepfm": "xdeepfm:XDeepFM",
    "dcn": "dcn:DCN",
    "dcnv2": "dcnv2:DCNv2",
    "autoint": "autoint:AutoInt",
    "fibinet": "fibinet:FiBiNET",
    "masknet": "masknet:MaskNet",
    "dlrm": "dlrm:DLRM",
    "din": "din:DIN",
    "bst": "bst:BST",
    "dssm": "dssm:DSSM",
    "sasrec": "sasrec:SASRec",
    "shared_bottom": "shared_bottom:SharedBottom",
    "mmoe": "mmoe:MMoE",
    "ple": "ple:PLE",
    "esmm": "esmm:ESMM",
}


def _load(path: str):
  module, name = path.split(":")
  return getattr(importlib.import_module(f"recjax.models.{module}"), name)


MODELS = {name: _load(path) for name, path in REGISTRY.items()}
TINY = {name: importlib.import_module(cls.__module__).tiny for name, cls in MODELS.items()}

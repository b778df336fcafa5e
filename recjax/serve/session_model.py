"""A SavedModel version held as TF-Serving holds it: a Session over its MetaGraph.

TF-Serving loads a version into a C++ `SavedModelBundle` and calls `Session::Run` per
request. Doing the same here (`tf.compat.v1.saved_model.loader.load` into a Session of its
own graph) rather than `tf.saved_model.load` matters twice on a small machine: loading is a
graph import and a restore op run in C++, not the ~1.5 s of Python re-creating every
function that `tf.saved_model.load` spends holding the GIL beside the requests; and a call
is one `Session.run` (it releases the GIL) instead of eager function binding, which checks
and converts every input in Python. What is served is still the exported SavedModel, the
signatures `saved_model_cli` shows, by their names.
"""

import logging

import numpy as np
import tensorflow as tf


class Signature:
  """One signature of a loaded version: `inputs` / `outputs` as TensorSpecs by name, and
  `signature(**columns)` -> {output: numpy array}."""

  def __init__(self, session, signature_def):
    self._session = session
    self.inputs = {k: _spec(v, k) for k, v in signature_def.inputs.items()}
    self.outputs = {k: _spec(v, k) for k, v in signature_def.outputs.items()}
    self._feeds = {k: v.name for k, v in signature_def.inputs.items()}
    self._fetches = {k: v.name for k, v in signature_def.outputs.items()}

  def __call__(self, **columns) -> dict[str, np.ndarray]:
    return self._session.run(self._fetches, {self._feeds[k]: v for k, v in columns.items()})


def _spec(info, name: str) -> tf.TensorSpec:
  return tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype), name)


def load(path) -> tuple[tf.compat.v1.Session, dict[str, Signature]]:
  """(the session, its signatures by name) of the SavedModel at `path` (tag "serve")."""
  graph = tf.Graph()
  session = tf.compat.v1.Session(graph=graph)
  logger = logging.getLogger("tensorflow")   # the v1 loader's deprecation notice: this is
  level = logger.level                        # the loader TF-Serving's C++ side is built on
  logger.setLevel(logging.ERROR)
  try:
    with graph.as_default():
      meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(path))
  finally:
    logger.setLevel(level)
  signatures = {name: Signature(session, d) for name, d in meta.signature_def.items()
                if name != "__saved_model_init_op"}
  return session, signatures

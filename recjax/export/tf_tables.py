"""The TF side of the embedding tables, shared by every exported SavedModel.

Both the whole model (`saved_model`) and each tower (`towers`) hold tables as frozen TF
variables, look them up with the same pooling as `embedding.lookup`, and feed the pooled
groups to a JAX function converted by jax2tf. Those three pieces live here once, so the two
exports cannot drift apart on pooling or on which inputs are batch polymorphic.
"""

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from recjax.embedding import tables as embedding


def variables(tree):
  """A JAX pytree (tables or params) as untrainable TF variables, same structure."""
  return jax.tree.map(lambda x: tf.Variable(np.asarray(x), trainable=False),
                      jax.device_get(tree))


def embedded_keys(plans):
  """The keys of `embedding.lookup`'s output: groups, and sequence groups' masks."""
  for plan in plans:
    yield plan.name
    if plan.combiner == "none":
      yield plan.name + embedding.MASK


def lookup(tables, plans, ids, weights):
  """TF twin of `embedding.lookup` (same pooling coefficients)."""
  out = {}
  for plan in plans:
    pooled = []
    for j, (feature, table) in enumerate(zip(plan.features, plan.tables)):
      rows = tf.gather(tables[plan.owner(j)][table], ids[feature])            # [B, L, D]
      w = weights[feature]
      if plan.combiner == "mean":
        w = w / tf.maximum(tf.reduce_sum(w, -1, keepdims=True), 1e-12)
      elif plan.combiner == "sqrtn":
        w = w * tf.math.rsqrt(tf.maximum(tf.reduce_sum(w * w, -1, keepdims=True), 1e-24))
      pooled.append(w[..., None] * rows if plan.combiner == "none"
                    else tf.einsum("bl,bld->bd", w, rows))
    out[plan.name] = tf.stack(pooled, 1)
    if plan.combiner == "none":
      out[plan.name + embedding.MASK] = tf.cast(weights[plan.features[0]] != 0, tf.float32)
  return out


def convert(fn, plans):
  """`fn(params, embedded, dense)` as a TF function, polymorphic in the batch of `embedded`
  (keyed as `plans` pool it) and of `dense`; served only, so no gradient."""
  return jax2tf.convert(
      fn, with_gradient=False,
      polymorphic_shapes=[None, {name: "(b, ...)" for name in embedded_keys(plans)},
                          "(b, ...)"])

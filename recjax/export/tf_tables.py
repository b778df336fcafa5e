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


def pool(tables, plan, j: int, ids, weights):
  """The pooled rows of the `j`-th feature of group `plan`: [B, D], or [B, L, D] for a
  sequence group (combiner "none"), as `embedding.lookup` pools them."""
  feature = plan.features[j]
  rows = tf.gather(tables[plan.owner(j)][plan.tables[j]], ids[feature])      # [B, L, D]
  w = weights[feature]
  if plan.combiner == "mean":
    w = w / tf.maximum(tf.reduce_sum(w, -1, keepdims=True), 1e-12)
  elif plan.combiner == "sqrtn":
    w = w * tf.math.rsqrt(tf.maximum(tf.reduce_sum(w * w, -1, keepdims=True), 1e-24))
  return w[..., None] * rows if plan.combiner == "none" else tf.einsum("bl,bld->bd", w, rows)


def mask(plan, weights):
  """A sequence group's [B, L] mask of real (not padding) positions."""
  return tf.cast(weights[plan.features[0]] != 0, tf.float32)


def lookup(tables, plans, ids, weights):
  """TF twin of `embedding.lookup` (same pooling coefficients)."""
  out = {}
  for plan in plans:
    out[plan.name] = tf.stack([pool(tables, plan, j, ids, weights)
                               for j in range(len(plan.features))], 1)
    if plan.combiner == "none":
      out[plan.name + embedding.MASK] = mask(plan, weights)
  return out


def convert(fn, plans):
  """`fn(params, embedded, dense)` as a TF function, polymorphic in the batch of `embedded`
  (keyed as `plans` pool it) and of `dense`; served only, so no gradient."""
  return jax2tf.convert(
      fn, with_gradient=False,
      polymorphic_shapes=[None, {name: "(b, ...)" for name in embedded_keys(plans)},
                          "(b, ...)"])

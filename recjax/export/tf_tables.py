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
  if plan.combiner == "none":
    return w[..., None] * rows
  if rows.shape[1] == 1:          # one id a row: a product (an einsum costs ~30 us a call)
    return rows[:, 0] * w
  return tf.reduce_sum(w[..., None] * rows, 1)


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


# The batch sizes the dense tower runs at: a request's rows are padded up to the next one.
# jax2tf's XlaCallModule op compiles its StableHLO once per concrete shape it meets (about
# 100 ms for a DeepFM); a ranking service sees every candidate count, so without buckets
# each new count would cost a request that compile. Powers of two: at most 2x the dense
# tower's work (small next to the transforms), and 25 sizes in all.
BUCKETS = tuple(2 ** i for i in range(25))


def bucket(n):
  """The bucket a batch of `n` rows is padded to (a scalar int32 tensor)."""
  buckets = tf.constant(BUCKETS, tf.int32)
  return tf.gather(buckets, tf.searchsorted(buckets, tf.reshape(n, [1]), side="left"))[0]


def _pad(x, size):
  """`x` with zero rows appended up to `size` rows (its static rank and inner dims kept)."""
  pad = tf.stack([[0, size - tf.shape(x)[0]]] + [[0, 0]] * (x.shape.rank - 1))
  padded = tf.pad(x, pad)
  padded.set_shape([None] + x.shape.as_list()[1:])
  return padded


def convert(fn, plans):
  """`fn(params, embedded, dense)` as a TF function, polymorphic in the batch of `embedded`
  (keyed as `plans` pool it) and of `dense`, run at the `BUCKETS` sizes (padded with zero
  rows, the padding's outputs dropped); served only, so no gradient."""
  converted = jax2tf.convert(
      fn, with_gradient=False,
      polymorphic_shapes=[None, {name: "(b, ...)" for name in embedded_keys(plans)},
                          "(b, ...)"])

  def bucketed(params, embedded, dense):
    n = tf.shape(dense)[0]
    size = bucket(n)
    out = converted(params, {k: _pad(v, size) for k, v in embedded.items()}, _pad(dense, size))
    return tf.nest.map_structure(lambda y: y[:n], out)

  return bucketed

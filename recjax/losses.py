"""Losses: pure functions of logits, labels and a mask of valid rows."""

import jax.numpy as jnp
import optax


def binary_cross_entropy(logits, labels, mask):
  """Mean sigmoid cross-entropy over rows where mask is 1."""
  losses = optax.sigmoid_binary_cross_entropy(logits, labels)
  return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0)

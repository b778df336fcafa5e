"""Sorted unique ids with the inverse map, at a static size: the first step of every sparse
update and of every all_to_all routing.

`jnp.unique(..., return_inverse=True)` sorts (id, position) pairs, and XLA's CPU sort of a
tuple goes through a generic comparator, several times slower than its sort of one 32-bit
array; a binary search of every id in the sorted uniques (`searchsorted`) was the other half
of the cost, a while loop of log2(N) gathers. Here each id is packed with its position into
one uint32 key, so one plain sort yields both the order and the permutation, and the inverse
is a scatter of the sorted slots through that permutation. When id and position bits do not
fit 32 bits together (10^8 rows and 10^5 ids), the ids are sorted digit by digit, least
significant first (an LSD radix sort whose passes are packed-key sorts; the position bits of a
later pass carry the rank of the earlier ones, which keeps it stable). On CPU, 26 tables of
10^6 rows with 4096 ids each: 3.0 ms against 5.2 ms for sort + searchsorted.
"""

import jax.numpy as jnp


def unique(ids, sentinel: int):
  """ids [N] in [0, sentinel] -> (unique [N] ascending, padded with `sentinel`; inverse [N])
  with unique[inverse] == ids. Ids outside [0, sentinel) must be mapped to `sentinel` first."""
  n = ids.shape[0]
  index_bits = max(1, (n - 1).bit_length())
  digit_bits = 32 - index_bits
  id_bits = max(1, int(sentinel).bit_length())
  if digit_bits < 1:
    raise ValueError(f"{n} ids are too many to pack with their positions into 32 bits")
  index_mask = jnp.uint32((1 << index_bits) - 1)
  rank = jnp.arange(n, dtype=jnp.uint32)
  keys = ids.astype(jnp.uint32)
  order = None                                   # positions sorted by the digits so far
  for shift in range(0, id_bits, digit_bits):
    digit = keys >> shift
    if shift + digit_bits < id_bits:
      digit = digit & jnp.uint32((1 << digit_bits) - 1)
    if order is None:
      packed = jnp.sort((digit << index_bits) | rank)
      order = (packed & index_mask).astype(jnp.int32)
    else:                                        # ties keep the earlier passes' order
      packed = jnp.sort((digit[order] << index_bits) | rank)
      order = order[(packed & index_mask).astype(jnp.int32)]
  ordered = (packed >> index_bits).astype(ids.dtype) if id_bits <= digit_bits else ids[order]
  first = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  slot = (jnp.cumsum(first) - 1).astype(jnp.int32)
  uniques = jnp.full((n,), sentinel, ids.dtype).at[jnp.where(first, slot, n)].set(
      ordered, mode="drop", unique_indices=True)
  inverse = jnp.zeros((n,), jnp.int32).at[order].set(slot, unique_indices=True)
  return uniques, inverse

"""Sorted unique ids with the inverse map, at a static size: the first step of every sparse
update and of every all_to_all routing.

`jnp.unique(..., return_inverse=True)` sorts (id, position) pairs, and XLA's CPU sort of a
tuple goes through a generic comparator, several times slower than its sort of one 32-bit
array. Where an id and its position fit 32 bits together (a table of up to 2^20 rows and 4096
ids, as one feature's table in a batch of 4096), each id is packed with its position into one
uint32 key: one plain sort yields both the sorted ids and the permutation, and the inverse is
a scatter of the sorted slots through that permutation. Otherwise (10^8 rows, or a table
shared by 26 features: 10^5 ids) the ids alone are sorted and each finds its slot by binary
search in the sorted uniques. Measured on CPU (2 cores): 26 tables of 10^6 rows with 4096 ids
each, 3.5 ms packed against 5.5 ms searched; for 106,496 ids of a 10^8-row table the search,
9.2 ms, beat a two-pass radix sort of packed keys, 10.4 ms.
"""

import jax.numpy as jnp


def unique(ids, sentinel: int):
  """ids [N] in [0, sentinel] -> (unique [N] ascending, padded with `sentinel`; inverse [N])
  with unique[inverse] == ids. Ids outside [0, sentinel) must be mapped to `sentinel` first."""
  n = ids.shape[0]
  index_bits = max(1, (n - 1).bit_length())
  packed = max(1, int(sentinel).bit_length()) + index_bits <= 32
  if packed:
    keys = jnp.sort((ids.astype(jnp.uint32) << index_bits) | jnp.arange(n, dtype=jnp.uint32))
    ordered = (keys >> index_bits).astype(ids.dtype)
    order = (keys & jnp.uint32((1 << index_bits) - 1)).astype(jnp.int32)
  else:
    ordered = jnp.sort(ids)
  first = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  slot = (jnp.cumsum(first) - 1).astype(jnp.int32)
  uniques = jnp.full((n,), sentinel, ids.dtype).at[jnp.where(first, slot, n)].set(
      ordered, mode="drop", unique_indices=True)
  if packed:
    inverse = jnp.zeros((n,), jnp.int32).at[order].set(slot, unique_indices=True)
  else:
    inverse = jnp.searchsorted(uniques, ids).astype(jnp.int32)
  return uniques, inverse

"""dedup.unique (hashed, first-occurrence order) and dedup.unique_sorted (packed keys or a
binary search) against numpy's unique."""

import jax
import numpy as np
import pytest

from recjax.embedding import dedup

CASES = [(1, 1), (7, 3), (4096, 10**4), (4096, 1000448),      # packed: id and position fit 32
         (4096, 10**8), (106_496, 10**8), (300, 2**31 - 1)]   # too wide to pack


def _ids(n, sentinel):
  rng = np.random.default_rng(n)
  ids = (rng.zipf(1.1, n) * 2654435761 % sentinel).astype(np.int32)
  ids[rng.random(n) < 0.1] = sentinel                     # padding mapped to the sentinel
  ids[:2] = [0, sentinel - 1] if n > 2 else ids[:2]
  return ids


@pytest.mark.parametrize("n, sentinel", CASES)
def test_unique_sorted_equals_numpy_unique_with_inverse(n, sentinel):
  ids = _ids(n, sentinel)
  uniques, inverse = jax.jit(lambda x: dedup.unique_sorted(x, sentinel))(ids)
  uniques, inverse = np.asarray(uniques), np.asarray(inverse)
  expected, expected_inverse = np.unique(ids, return_inverse=True)
  np.testing.assert_array_equal(uniques[:len(expected)], expected)
  assert (uniques[len(expected):] == sentinel).all()
  np.testing.assert_array_equal(inverse, expected_inverse)
  assert uniques.dtype == ids.dtype and inverse.dtype == np.int32


@pytest.mark.parametrize("n, sentinel", CASES)
def test_unique_equals_numpy_unique_in_order_of_first_occurrence(n, sentinel):
  ids = _ids(n, sentinel)
  uniques, inverse = map(np.asarray, jax.jit(lambda x: dedup.unique(x, sentinel))(ids))
  expected, first = np.unique(ids, return_index=True)
  np.testing.assert_array_equal(uniques[:len(expected)], ids[np.sort(first)])
  assert (uniques[len(expected):] == sentinel).all()
  np.testing.assert_array_equal(uniques[inverse], ids)
  assert uniques.dtype == ids.dtype and inverse.dtype == np.int32


def test_first_occurrence_is_exact_in_a_crowded_hash_table(monkeypatch):
  """With one slot per id and every id distinct, about a third of the ids lose their slot in
  each round: the while loop keeps hashing the losers with new multipliers until none is left."""
  n = 4000
  ids = np.random.default_rng(0).permutation(np.arange(n) * 7919).astype(np.int32)
  ids = np.concatenate([ids, ids[::-3]])                    # and some repeats, out of order
  monkeypatch.setattr(dedup, "TABLE_SPREAD", 1)
  first = np.asarray(jax.jit(dedup.first_occurrence)(ids))
  _, index, inverse = np.unique(ids, return_index=True, return_inverse=True)
  np.testing.assert_array_equal(first, index[inverse])

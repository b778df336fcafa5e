"""dedup.unique against numpy's unique, with packed keys and with a binary search."""

import jax
import numpy as np
import pytest

from recjax import dedup


@pytest.mark.parametrize("n, sentinel", [
    (1, 1), (7, 3), (4096, 10**4), (4096, 1000448),       # packed: id and position bits fit 32
    (4096, 10**8), (106_496, 10**8), (300, 2**31 - 1)])   # too wide to pack: sorted ids, searched
def test_unique_equals_numpy_unique_with_inverse(n, sentinel):
  rng = np.random.default_rng(n)
  ids = (rng.zipf(1.1, n) * 2654435761 % sentinel).astype(np.int32)
  ids[rng.random(n) < 0.1] = sentinel                     # padding mapped to the sentinel
  ids[:2] = [0, sentinel - 1] if n > 2 else ids[:2]
  uniques, inverse = jax.jit(lambda x: dedup.unique(x, sentinel))(ids)
  uniques, inverse = np.asarray(uniques), np.asarray(inverse)
  expected, expected_inverse = np.unique(ids, return_inverse=True)
  np.testing.assert_array_equal(uniques[:len(expected)], expected)
  assert (uniques[len(expected):] == sentinel).all()
  np.testing.assert_array_equal(inverse, expected_inverse)
  assert uniques.dtype == ids.dtype and inverse.dtype == np.int32

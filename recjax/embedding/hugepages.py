"""Huge pages for embedding tables on the CPU: the step's random row reads stop missing the TLB.

A sparse step touches a few thousand random rows of each table. With 4 KiB pages, every row
of a table of gigabytes sits on its own page, so each read misses the TLB and walks the page
tables before it even reaches memory; that walk, not the arithmetic, is what makes a step on a
10^8-row table slower than on a 10^4-row one. Linux backs memory with 2 MiB pages only where
a program asks (`transparent_hugepage=madvise`, the usual setting) and XLA does not ask, so we
do: `madvise(MADV_HUGEPAGE)` on each large table buffer, and `MADV_COLLAPSE` (Linux 6.1+) to
rebuild its existing pages as huge pages at once rather than waiting for khugepaged. Contents
are untouched. The train step donates its state, so the updated tables stay in the same
buffers and keep their pages; call `advise` again after anything that allocates new ones
(init, restore).

Measured on the 2-core CI kind of machine (one 1.6 GB table, 106k random rows gathered and
scattered per step): 2.6-3.2 ms per step with 4 KiB pages, 1.8-1.9 ms after `advise`
(a 10^6-row table: 1.3 ms). `RECJAX_HUGEPAGES=0` turns it off; elsewhere than Linux CPU
buffers it does nothing.
"""

import ctypes
import logging
import os
import sys

import jax

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20
MIN_BYTES = 32 << 20        # smaller buffers fit the caches' reach with small pages anyway

_libc = None


def _madvise(start: int, length: int, advice: int) -> int:
  """madvise(2); 0 or the errno (EINVAL where the kernel lacks the advice)."""
  global _libc
  if _libc is None:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
  if _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), advice) == 0:
    return 0
  return ctypes.get_errno()


def _buffers(tree):
  """(address, bytes) of every CPU device buffer of the arrays in `tree`."""
  for leaf in jax.tree.leaves(tree):
    if not isinstance(leaf, jax.Array) or leaf.is_deleted():
      continue
    for shard in leaf.addressable_shards:
      if shard.device.platform == "cpu" and shard.data.nbytes >= MIN_BYTES:
        yield shard.data.unsafe_buffer_pointer(), shard.data.nbytes


def advise(tree) -> int:
  """Backs the large CPU buffers of `tree` with huge pages; returns the bytes advised."""
  if os.environ.get("RECJAX_HUGEPAGES", "1") == "0" or not sys.platform.startswith("linux"):
    return 0
  jax.block_until_ready(tree)
  advised = 0
  for address, size in _buffers(tree):
    start = -(-address // HUGE_PAGE) * HUGE_PAGE      # whole huge pages inside the buffer
    end = (address + size) // HUGE_PAGE * HUGE_PAGE
    if end <= start:
      continue
    if _madvise(start, end - start, MADV_HUGEPAGE):
      logging.info("recjax: madvise(MADV_HUGEPAGE) is not available; tables keep small pages")
      return advised
    _madvise(start, end - start, MADV_COLLAPSE)       # best effort: khugepaged does it later
    advised += end - start
  return advised

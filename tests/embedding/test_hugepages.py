"""Huge pages for tables: contents kept, the donated step keeps the buffer (and its pages)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.embedding import hugepages

THP = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _huge_bytes() -> int:
  text = pathlib.Path("/proc/self/smaps_rollup").read_text()
  return int(text.split("AnonHugePages:")[1].split()[0]) * 1024


def test_advise_keeps_contents_and_a_donated_step_keeps_the_buffer():
  table = jax.random.normal(jax.random.key(0), (1 << 21, 16))     # 128 MiB
  small = jnp.ones((1000, 16))
  before = np.asarray(table).copy()
  advised = hugepages.advise({"big": table, "small": small})
  if not THP.exists() or "[never]" in THP.read_text():
    pytest.skip(f"transparent huge pages are off here ({THP}): nothing to check")
  assert 0 < advised <= table.nbytes and advised >= table.nbytes - 2 * hugepages.HUGE_PAGE
  np.testing.assert_array_equal(np.asarray(table), before)
  assert _huge_bytes() >= advised // 2, "MADV_COLLAPSE left the table in small pages"

  address = table.unsafe_buffer_pointer()
  step = jax.jit(lambda t, i: t.at[i].add(1.0), donate_argnums=0)
  ids = jnp.arange(0, 1 << 21, 4099)
  table = step(table, ids)
  assert table.unsafe_buffer_pointer() == address      # updated in place: same pages
  np.testing.assert_array_equal(np.asarray(table)[np.asarray(ids)], before[np.asarray(ids)] + 1)


def test_off_by_environment(monkeypatch):
  monkeypatch.setenv("RECJAX_HUGEPAGES", "0")
  assert hugepages.advise(jnp.zeros((1 << 22, 8))) == 0

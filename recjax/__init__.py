"""recjax: config-driven recommendation models in JAX/Flax."""

import os

__version__ = "0.1.0"

# The sparse update scatters touched rows into the donated tables in place. XLA's CPU copy
# insertion, without region analysis, cannot prove that every read of the old table (the
# lookup's gather) runs before that scatter, and copies each table first: a table-sized
# copy per step, which made a step's cost grow with table size (benchmarks/embedding.py).
# With region analysis it orders the reads first and copies nothing. The flag is read when
# JAX starts its CPU backend, so it is set here, on import, before any computation. (GPU and
# TPU compilers do this analysis by default.)
_CPU_COPY_FLAG = "--xla_cpu_copy_insertion_use_region_analysis"
if _CPU_COPY_FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_CPU_COPY_FLAG}=true".strip()

# Each step's temporaries come back from malloc as mapped pages, not fresh ones (allocator.py).
from recjax import allocator  # noqa: E402

allocator.tune()

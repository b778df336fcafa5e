"""The memory floor under benchmarks/embedding.py's `table_size_ratio`: how much more touching
the step's rows costs in a big table than in a small one, in hand-written C with prefetching.

  python benchmarks/memory_floor.py [--rounds 10] [--only small shared]

The engine's step does a fixed amount of work per id whatever the table's size (no table-sized
temporary, no sweep over rows), yet on the CPU a step on 10^8 rows is slower than on 2.6 x 10^5:
the small tables (16.6 MB) sit in the L3 cache and in the TLB's reach, the big ones do not, so
their rows come from DRAM through page walks. This script measures that cost apart from any
framework: `memory_floor.c` (compiled here with gcc -O2) reads the rows of the same ids as
embedding.py's configurations (`_batches`, the same Zipf ids and hash; separate tables laid out
one after another), then updates each distinct row and its row-wise Adagrad accumulator, with
software prefetch, distinct ids found before timing. In each round it runs a few steps of
every configuration, then the engine's own steps of the same configurations (embedding.py's,
compiled and warmed up as there) run as many, so all the figures see the same load on a shared
machine. Then, the worse of `large` and `shared` against `small`:

  floor_growth_ms   the C loop's extra time per step on the big tables: the cost of their rows'
                    cache and TLB misses alone, in a loop that does nothing else.
  floor_ratio       the same as a ratio of the C loop's times.
  engine_growth_ms, table_size_ratio   the same for the engine's whole step, in this run.
  best_table_size_ratio   (small_step_ms + floor_growth_ms) / small_step_ms: the least
                    `table_size_ratio` a step as fast as the engine's on small tables could
                    reach, were its row traffic on big tables as cheap as the C loop's. A faster
                    small step makes this bound worse, not better.

Prints one JSON line per configuration (the C loop's medians and the engine's) and a last line
with the figures above. Needs gcc and about 16 GB of memory for both at once (a configuration
that does not fit is skipped with the reason).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import embedding as bench            # noqa: E402  (the benchmark's configurations and ids)

SOURCE = pathlib.Path(__file__).with_suffix(".c")
CONFIGS = ["small", "shared_small", "large", "shared"]


def _flat_ids(config: str) -> tuple[int, np.ndarray]:
  """(rows of the flat table, [steps, F * B] int32 ids) of one configuration: separate tables
  laid out one after another, each feature's ids offset into its own."""
  _, _, rows = bench._setup(config, quick=False, placement="auto")
  shared = config.startswith("shared")
  steps = []
  for batch in bench._batches(rows):
    columns = [batch[f"f{j:02d}"][:, 0].astype(np.int64) + (0 if shared else j * rows)
               for j in range(bench.FEATURES)]
    steps.append(np.concatenate(columns).astype(np.int32))
  return (rows if shared else rows * bench.FEATURES), np.stack(steps)


def _compile(directory: str) -> str:
  if shutil.which("gcc") is None:
    sys.exit("memory_floor needs gcc to build memory_floor.c")
  binary = os.path.join(directory, "memory_floor")
  subprocess.run(["gcc", "-O2", "-o", binary, str(SOURCE), "-lm"], check=True)
  return binary


def _floor_process(directory: str, configs: list[str], results: dict) -> subprocess.Popen:
  """memory_floor.c started on the configurations that fit in the memory left; the others get
  a "skipped" reason in `results`."""
  command = [_compile(directory), str(bench.DIM), str(bench.FEATURES * bench.BATCH)]
  budget = bench._available_bytes() * bench.MEMORY_HEADROOM
  for config in configs:
    rows, ids = _flat_ids(config)
    need = rows * (bench.DIM + 1) * 4
    if need > budget:
      results[config]["skipped"] = f"needs {need / 2**30:.1f} GiB, {budget / 2**30:.1f} usable"
      continue
    budget -= need
    path = os.path.join(directory, f"{config}.ids")
    ids.tofile(path)
    command += [str(rows), path]
  floor = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  ready, *distinct = floor.stdout.readline().split()
  if ready != "ready":
    sys.exit(f"memory_floor.c did not start: {ready!r}")
  for config, count in zip([c for c in configs if "skipped" not in results[c]], distinct):
    results[config]["distinct_rows"] = int(count)
  return floor


def _floor_step(floor: subprocess.Popen, index: int, step: int) -> tuple[float, float]:
  floor.stdin.write(f"{index} {step}\n")
  floor.stdin.flush()
  gather_ms, update_ms = map(float, floor.stdout.readline().split())
  return gather_ms, update_ms


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=10,
                      help=f"interleaved rounds of {bench.BATCHES} steps per configuration")
  parser.add_argument("--only", nargs="*", default=CONFIGS, choices=CONFIGS)
  args = parser.parse_args()

  # The engine's configurations first (each checks the memory it needs), then the C loop's.
  mesh = bench.on_devices(1)
  engines = {c: bench.Config(c, argparse.Namespace(quick=False, placement="auto"), mesh)
             for c in args.only}
  results = {c: {"config": c, "rows_total": engines[c].result["rows_total"]} for c in args.only}
  with tempfile.TemporaryDirectory() as directory:
    floor = _floor_process(directory, args.only, results)
    measured = [c for c in args.only if "skipped" not in results[c]]
    times = {c: [] for c in measured}      # per config: (gather_ms, update_ms) of each step
    for r in range(1 + args.rounds):       # round 0 untimed: every step of every config once
      for index, config in enumerate(measured):
        steps = [_floor_step(floor, index, s) for s in range(bench.BATCHES)]
        if r:
          times[config] += steps
      for engine in engines.values():
        if engine.state is not None:
          engine.run(bench.BATCHES)
          if not r:
            engine.times.clear()
    floor.stdin.close()
    if floor.wait():
      sys.exit(f"memory_floor.c exited with {floor.returncode}")

  for config in measured:
    gather, update = np.array(times[config]).T
    results[config].update(
        gather_ms=round(float(np.median(gather)), 3), update_ms=round(float(np.median(update)), 3),
        table_ms=round(float(np.median(gather + update)), 3))
  for config in args.only:
    results[config]["engine_step_ms"] = engines[config].finish().get("step_ms_median")
    print(json.dumps(results[config]), flush=True)

  def growth(key):
    """The worse of large and shared over small in `key`: (difference, ratio) or Nones."""
    small = results.get("small", {}).get(key)
    large = [results[c][key] for c in ("large", "shared") if results.get(c, {}).get(key)]
    return (max(large) - small, max(large) / small) if small and large else (None, None)

  floor_growth, floor_ratio = growth("table_ms")
  engine_growth, engine_ratio = growth("engine_step_ms")
  step = results.get("small", {}).get("engine_step_ms")
  best = (step + floor_growth) / step if step and floor_growth is not None else None
  rounded = lambda x: None if x is None else round(x, 3)
  print(json.dumps({
      "floor_growth_ms": rounded(floor_growth), "floor_ratio": rounded(floor_ratio),
      "engine_growth_ms": rounded(engine_growth), "table_size_ratio": rounded(engine_ratio),
      "small_step_ms": step, "best_table_size_ratio": rounded(best),
      "load_average": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
  main()

"""The memory floor under benchmarks/embedding.py's `table_size_ratio`: how much more touching
the step's rows costs in a big table than in a small one, in hand-written C with prefetching.

  python benchmarks/memory_floor.py [--rounds 40]

The engine's step does a fixed amount of work per id whatever the table's size (no table-sized
temporary, no sweep over rows), yet on the CPU a step on 10^8 rows is slower than on 2.6 x 10^5:
the small tables (16.6 MB) sit in the L3 cache and in the TLB's reach, the big ones do not, so
their rows come from DRAM through page walks. This script measures that cost apart from any
framework: `memory_floor.c` (compiled here with gcc -O2) reads the rows of the same ids as
embedding.py's configurations (`_batches`, the same Zipf ids and hash; separate tables laid out
one after another), then updates each distinct row and its row-wise Adagrad accumulator, with
software prefetch, distinct ids found before timing. In each round it runs one step of every
configuration, then the engine's own `small` step (embedding.py's, compiled and warmed up as
there) runs once, so all the figures see the same load on a shared machine. Then:

  floor_growth_ms   the table traffic's extra cost in the worse of `large` and `shared` over
                    `small`: what any implementation of the step pays on this machine.
  floor_ratio       the same as a ratio of the traffic alone.
  best_table_size_ratio   (small_step_ms + floor_growth_ms) / small_step_ms, with the engine's
                    small step measured in this run: the least `table_size_ratio` a step this
                    fast on small tables can reach, were its table traffic as cheap as this C
                    loop's. A faster small step makes this bound worse, not better.

Prints one JSON line per configuration, one for the engine's small step and a last line with the
figures above (medians over the rounds). Needs gcc and about 9 GB of memory (configurations that
do not fit are skipped with the reason).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import jax
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


def _engine_small():
  """embedding.py's `small` configuration on one device, compiled and warmed up."""
  args = argparse.Namespace(quick=False, placement="auto")
  return bench.Config("small", args, bench.sharding.make_mesh(jax.devices()[:1]))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=40, help="timed steps per configuration")
  parser.add_argument("--only", nargs="*", default=CONFIGS, choices=CONFIGS)
  args = parser.parse_args()

  engine = _engine_small()
  with tempfile.TemporaryDirectory() as directory:
    command, results = [_compile(directory), str(bench.DIM), str(bench.FEATURES * bench.BATCH)], {}
    budget = bench._available_bytes() * bench.MEMORY_HEADROOM
    for config in args.only:
      rows, ids = _flat_ids(config)
      results[config] = {"config": config, "rows_total": rows}
      need = rows * (bench.DIM + 1) * 4
      if need > budget:
        results[config]["skipped"] = (f"needs {need / 2**30:.1f} GiB, "
                                      f"{budget / 2**30:.1f} GiB usable")
        continue
      budget -= need
      path = os.path.join(directory, f"{config}.ids")
      ids.tofile(path)
      command += [str(rows), path]
    measured = [c for c in args.only if "skipped" not in results[c]]
    floor = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready, *distinct = floor.stdout.readline().split()
    assert ready == "ready", ready
    times = []                  # per round: [gather_ms, update_ms] of each measured config
    for r in range(bench.BATCHES + args.rounds):   # a first pass over the steps, untimed
      floor.stdin.write(f"{r}\n")
      floor.stdin.flush()
      line = [float(x) for x in floor.stdout.readline().split()]
      engine.run(1)
      if r >= bench.BATCHES:
        times.append(line)
      else:
        engine.times.clear()
    floor.stdin.close()
    if floor.wait():
      sys.exit(f"memory_floor.c exited with {floor.returncode}")

  times = np.array(times).reshape(len(times), len(measured), 2)
  for k, config in enumerate(measured):
    gather, update = times[:, k, 0], times[:, k, 1]
    results[config].update(
        gather_ms=round(float(np.median(gather)), 3), update_ms=round(float(np.median(update)), 3),
        table_ms=round(float(np.median(gather + update)), 3), distinct_rows=int(distinct[k]))
  for config in args.only:
    print(json.dumps(results[config]), flush=True)
  small_step = engine.finish()
  print(json.dumps(small_step), flush=True)

  table_ms = {c: results[c].get("table_ms") for c in args.only}
  large = [table_ms[c] for c in ("large", "shared") if table_ms.get(c)]
  small, step = table_ms.get("small"), small_step.get("step_ms_median")
  growth = ratio = best = None
  if large and small:
    growth, ratio = max(large) - small, max(large) / small
    if step:
      best = (step + growth) / step
  print(json.dumps({
      "floor_growth_ms": growth and round(growth, 3), "floor_ratio": ratio and round(ratio, 3),
      "small_step_ms": step, "best_table_size_ratio": best and round(best, 3),
      "load_average": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
  main()

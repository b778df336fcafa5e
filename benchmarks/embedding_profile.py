"""Where an embedding step's time goes: XLA's per-op times for configurations of
benchmarks/embedding.py, and which ops grow from the first configuration to the others.

  python benchmarks/embedding_profile.py [--configs shared_small shared] [--devices 8]

`table_size_ratio` compares steps whose programs differ only in the tables' sizes
(`shared_small` and `shared` compile to the same HLO but for the row counts), so the ops
that grow are the ones whose memory reads miss the caches and the TLB, not ones that do more
work. Each configuration is built, compiled and warmed up as in embedding.py, then
`--steps` steps run under `jax.profiler`; the trace's op events (thunks of XLA's CPU runtime:
fusions, scatters, gathers, collectives) are summed by name over every thread and divided
by the steps. Ops split over threads count each part, so a line can exceed the step's wall
time; the growth between configurations is what to read. The profiler slows the step down
(its wall time is printed too).

Prints one JSON line per configuration (its top ops) and one per later configuration with
the ops that grew or shrank most against the first.
"""

import argparse
import collections
import json
import pathlib
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import embedding as bench            # noqa: E402  (the benchmark's configurations)

TOP = 12


def _op_times(trace_dir: str, steps: int) -> dict[str, float]:
  """µs per step of each op in the trace, summed over threads."""
  [path] = pathlib.Path(trace_dir).rglob("*.xplane.pb")
  totals = collections.Counter()
  for plane in jax.profiler.ProfileData.from_file(str(path)).planes:
    for line in plane.lines:
      if line.name == "python":              # host-side Python frames, not XLA's ops
        continue
      for event in line.events:
        if "ThunkExecutor" not in event.name:   # the executor's wrapper around all ops
          totals[event.name] += event.duration_ns
  return {name: total / steps / 1e3 for name, total in totals.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", nargs="+", default=["shared_small", "shared"],
                      choices=[c for c in bench.CONFIGS if not c.startswith("naive_")])
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--steps", type=int, default=20, help="profiled steps per configuration")
  parser.add_argument("--quick", action="store_true", help="large tables 10 times smaller")
  args = parser.parse_args()
  mesh = bench.on_devices(args.devices)
  options = argparse.Namespace(quick=args.quick, placement="auto")

  per_config = {}
  for name in args.configs:
    config = bench.Config(name, options, mesh)
    if config.state is None:
      print(json.dumps(config.result), flush=True)
      continue
    config.run(5)                                        # settle before tracing
    with tempfile.TemporaryDirectory() as trace_dir:
      jax.profiler.start_trace(trace_dir)
      config.run(args.steps)
      jax.profiler.stop_trace()
      ops = _op_times(trace_dir, args.steps)
    per_config[name] = ops
    top = sorted(ops.items(), key=lambda kv: -kv[1])[:TOP]
    print(json.dumps({"config": name, "devices": mesh.size,
                      "profiled_step_ms_median": round(float(np.median(config.times[-args.steps:])), 2),
                      "ops_us_per_step": {k: round(v, 1) for k, v in top}}), flush=True)
    del config

  if not per_config:
    return
  first, *others = list(per_config)
  for name in others:
    a, b = per_config[first], per_config[name]
    growth = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b)}
    top = sorted(growth.items(), key=lambda kv: -abs(kv[1]))[:TOP]
    print(json.dumps({"from": first, "to": name, "total_growth_us": round(sum(growth.values()), 1),
                      "growth_us_per_step": {k: [round(a.get(k, 0.0), 1), round(b.get(k, 0.0), 1)]
                                             for k, _ in top}}), flush=True)


if __name__ == "__main__":
  main()

"""The one launch script: `recjax train` on N local processes, or rendered for a cluster.

  python launch/launch.py --config configs/x.py:smoke --workdir /tmp/x [--config.a.b=v ...]
      [--num_processes N] [--devices D] [--cluster local|slurm|kubernetes|tpu_vm] [--dry_run]

Every process runs the same `python -m recjax.main train ...`; `recjax/distributed.py` reads
its role from RECJAX_COORDINATOR, RECJAX_NUM_PROCESSES and RECJAX_PROCESS_ID and joins the
others through `jax.distributed` before JAX is used. Locally this script sets them (a free
port on 127.0.0.1, ranks 0..N-1), prefixes each process's output with its rank, and stops all
of them as soon as one fails. For a cluster it writes the job the scheduler runs, and there
each value is read at run time from the scheduler's own variables:

  slurm       sbatch script: coordinator = first host of $SLURM_JOB_NODELIST, port from
              $SLURM_JOB_ID; count and rank = $SLURM_NTASKS, $SLURM_PROCID of each srun task
  kubernetes  headless Service + Indexed Job: coordinator = pod 0's DNS name
              <job>-0.<service>; rank = the pod's completion index; count = completions
  tpu_vm      gcloud ... ssh --worker=all: rank = the VM's agent-worker-number, count and
              coordinator = the slice's worker-network-endpoints (TPU metadata server)

--dry_run prints the commands (or the manifest) and runs nothing. Without it, local runs
train here and the cluster kinds submit (sbatch, kubectl apply, gcloud). The script needs
only the Python standard library, so it runs on a login node without JAX.
"""

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

CLUSTERS = ("local", "slurm", "kubernetes", "tpu_vm")
PASSED_FLAGS = ("--no-eval", "--no-export")      # recjax train's flags besides --config.*
COORDINATOR_PORT = 8476                          # JAX's own default on TPU slices
SLURM_PORT = "$((SLURM_JOB_ID % 4096 + 61440))"  # jobs sharing a node get different ports
TPU_METADATA = "http://metadata.google.internal/computeMetadata/v1/instance/attributes"
STOP_GRACE_S = 10
YAML_WORDS = ("y", "n", "yes", "no", "on", "off", "true", "false", "null")   # quoted, not plain


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Any --config.KEY=VALUE, --no-eval and --no-export go to `recjax train`.")
  parser.add_argument("--config", required=True, help="configs/<exp>.py[:arg]")
  parser.add_argument("--workdir", required=True,
                      help="checkpoints, logs, exports; on a cluster: storage every host shares")
  parser.add_argument("--cluster", choices=CLUSTERS, default="local")
  parser.add_argument("--num_processes", type=int, default=1,
                      help="processes, one per host on a cluster (tpu_vm: the slice's workers)")
  parser.add_argument("--devices", type=int, default=int(os.environ.get("DEVICES") or 0),
                      help="local: fake CPU devices per process (default: $DEVICES, else 1)")
  parser.add_argument("--dry_run", action="store_true", help="print what would run; run nothing")
  parser.add_argument("--python", help="interpreter on the hosts (default: this one locally, "
                      "else python3)")
  parser.add_argument("--job_name", default="recjax", help="slurm / kubernetes job name")
  parser.add_argument("--port", type=int, default=COORDINATOR_PORT,
                      help="coordinator port on kubernetes and tpu_vm")
  parser.add_argument("--chdir", help="directory holding the configs on the hosts")
  parser.add_argument("--slurm_args", default="",
                      help="extra #SBATCH options, e.g. '--partition=gpu --gpus-per-node=8'")
  parser.add_argument("--image", help="kubernetes: container image with recjax installed")
  parser.add_argument("--tpu", help="tpu_vm: the TPU VM's name")
  parser.add_argument("--zone", help="tpu_vm: its zone")
  parser.add_argument("--project", help="tpu_vm: its project (default: gcloud's)")
  return parser


def parse(argv) -> tuple:
  parser = _parser()
  args, rest = parser.parse_known_args(argv)
  for item in rest:
    if not (item.startswith("--config.") or item in PASSED_FLAGS):
      parser.error(f"unrecognized argument {item!r} (recjax train takes --config.KEY=VALUE, "
                   f"{', '.join(PASSED_FLAGS)})")
  if args.num_processes < 1:
    parser.error(f"--num_processes={args.num_processes}: expected an integer >= 1")
  if args.devices < 0:
    parser.error(f"--devices={args.devices}: expected an integer >= 1 (0: the machine's devices)")
  needed = {"kubernetes": ("image",), "tpu_vm": ("tpu", "zone")}.get(args.cluster, ())
  for name in needed:
    if getattr(args, name) is None:
      parser.error(f"--cluster={args.cluster} needs --{name}")
  if args.python is None:
    args.python = sys.executable if args.cluster == "local" else "python3"
  train = [args.python, "-m", "recjax.main", "train", "--config", args.config,
           "--workdir", args.workdir, *rest]
  return args, train


def _shell(command) -> str:
  return " ".join(shlex.quote(str(part)) for part in command)


def _role(coordinator, count, rank) -> dict:
  return {"RECJAX_COORDINATOR": coordinator, "RECJAX_NUM_PROCESSES": str(count),
          "RECJAX_PROCESS_ID": str(rank)}


# ---- local: N processes on this machine ----

def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def local_environments(args, port: int) -> list:
  """The variables each local process gets on top of this one's."""
  extra = {}
  if args.devices:
    extra["XLA_FLAGS"] = " ".join(filter(None, [
        os.environ.get("XLA_FLAGS"), f"--xla_force_host_platform_device_count={args.devices}"]))
  if args.num_processes == 1:
    return [extra]
  return [{**extra, **_role(f"127.0.0.1:{port}", args.num_processes, rank)}
          for rank in range(args.num_processes)]


def _pump(stream, sink, prefix: str, lock, last_line: list) -> None:
  for line in stream:
    with lock:
      sink.write(prefix + line)
      sink.flush()
    if line.strip():
      last_line[0] = line.rstrip("\n")


def _stop(processes) -> None:
  """SIGTERM each process group still running, then SIGKILL what is left after a grace."""
  running = [p for p in processes if p.poll() is None]
  for sig in (signal.SIGTERM, signal.SIGKILL):
    for p in running:
      try:
        os.killpg(p.pid, sig)
      except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE_S
    while any(p.poll() is None for p in running) and time.monotonic() < deadline:
      time.sleep(0.05)
    running = [p for p in running if p.poll() is None]
    if not running:
      return


def _status(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode


def run_local(args, train) -> int:
  """Starts the processes, streams their output, and returns the first failure's status."""
  environments = local_environments(args, free_port())
  many = len(environments) > 1
  lock, processes, pumps, last_lines = threading.Lock(), [], [], []
  try:
    for rank, extra in enumerate(environments):
      # A session per process: stopping it reaches anything it started too.
      p = subprocess.Popen(train, env={**os.environ, **extra}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
      processes.append(p)
      last_lines.append([None])
      prefix = f"[{rank}] " if many else ""
      for stream, sink, last in ((p.stdout, sys.stdout, last_lines[-1]), (p.stderr, sys.stderr, [None])):
        pump = threading.Thread(target=_pump, args=(stream, sink, prefix, lock, last), daemon=True)
        pump.start()
        pumps.append(pump)
    while True:
      failed = [(rank, p.returncode) for rank, p in enumerate(processes)
                if p.poll() is not None and p.returncode != 0]
      if failed:
        rank, code = failed[0]
        print(f"launch: process {rank} exited with status {_status(code)}; stopping the others",
              file=sys.stderr, flush=True)
        _stop(processes)
        return _status(code)
      if all(p.returncode is not None for p in processes):
        break
      time.sleep(0.1)
  except KeyboardInterrupt:
    _stop(processes)
    return 130
  for pump in pumps:
    pump.join(timeout=5)
  summary = last_lines[0][0]
  if many and summary and summary.startswith("{"):
    print(summary, flush=True)                 # process 0's summary ends the output, unprefixed
  return 0


def local_dry_run(args, train) -> str:
  environments = local_environments(args, free_port())
  return "\n".join(_shell([f"{k}={v}" for k, v in extra.items()] + train) for extra in environments)


# ---- slurm: an sbatch script; srun starts one task per process ----

def slurm_script(args, train) -> str:
  per_task = ("export RECJAX_NUM_PROCESSES=$SLURM_NTASKS RECJAX_PROCESS_ID=$SLURM_PROCID; exec "
              + _shell(train))
  options = [f"--job-name={args.job_name}", f"--nodes={args.num_processes}",
             "--ntasks-per-node=1", *shlex.split(args.slurm_args)]
  if args.chdir:
    options.append(f"--chdir={args.chdir}")
  return "\n".join([
      "#!/bin/bash",
      *(f"#SBATCH {shlex.quote(option)}" for option in options),
      "# One task per node; each reads its rank and the count from SLURM_PROCID / SLURM_NTASKS.",
      "set -euo pipefail",
      'coordinator_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # reads all: no SIGPIPE under pipefail',
      f'export RECJAX_COORDINATOR="$coordinator_host:{SLURM_PORT}"',
      f"srun --kill-on-bad-exit=1 bash -c {shlex.quote(per_task)}",
      ""])


# ---- kubernetes: a headless Service and an Indexed Job ----

def _yaml(value, indent: int = 0) -> list:
  """Block YAML of dicts, lists, strings (plain, else JSON-quoted: valid YAML), ints, bools."""
  pad = "  " * indent
  if isinstance(value, dict):
    lines = []
    for key, item in value.items():
      if isinstance(item, (dict, list)) and item:
        lines += [f"{pad}{key}:", *_yaml(item, indent + 1)]
      else:
        lines.append(f"{pad}{key}: {_yaml(item)[0].strip()}")
    return lines
  if isinstance(value, list):
    lines = []
    for item in value:
      inner = _yaml(item, indent + 1)
      lines += [f"{pad}- {inner[0].strip()}", *inner[1:]]
    return lines or [f"{pad}[]"]
  if isinstance(value, bool):
    return [pad + ("true" if value else "false")]
  if value is None:
    return [pad + "null"]
  if isinstance(value, int):
    return [pad + str(value)]
  text = str(value)
  plain = re.fullmatch(r"[A-Za-z_/][\w./:@=-]*", text) and text.lower() not in YAML_WORDS
  return [pad + (text if plain else json.dumps(text))]


def kubernetes_manifest(args, train) -> str:
  name, n = args.job_name, args.num_processes
  service = {
      "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
      "spec": {"clusterIP": "None", "selector": {"job-name": name},
               "ports": [{"name": "coordinator", "port": args.port}]}}
  index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
  container = {
      "name": "recjax", "image": args.image, "command": train,
      "env": [{"name": "RECJAX_COORDINATOR", "value": f"{name}-0.{name}:{args.port}"},
              {"name": "RECJAX_NUM_PROCESSES", "value": str(n)},
              {"name": "RECJAX_PROCESS_ID", "valueFrom": {"fieldRef": {"fieldPath": index}}}],
      "ports": [{"containerPort": args.port, "name": "coordinator"}]}
  if args.chdir:
    container["workingDir"] = args.chdir
  job = {
      "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
      "spec": {"completionMode": "Indexed", "completions": n, "parallelism": n,
               "backoffLimit": 0,           # one failed process fails the job, stopping the rest
               # The Job controller labels its pods job-name=<name>: the Service selects them.
               "template": {"spec": {"subdomain": name, "restartPolicy": "Never",
                                     "containers": [container]}}}}
  header = [f"# {n} pods <job>-<index>.<service>; pod 0 coordinates. Apply with kubectl apply -f.",
            "# The workdir must be storage every pod shares (a mounted volume, a bucket)."]
  return "\n".join(header + _yaml(service) + ["---"] + _yaml(job)) + "\n"


# ---- tpu_vm: the same command on every worker of a TPU VM slice ----

def tpu_vm_command(args, train) -> list:
  metadata = f'curl -sf -H Metadata-Flavor:Google "{TPU_METADATA}'
  remote = "; ".join([
      "set -eu",
      *([f"cd {shlex.quote(args.chdir)}"] if args.chdir else []),
      f'endpoints=$({metadata}/worker-network-endpoints")',
      f'RECJAX_PROCESS_ID=$({metadata}/agent-worker-number")',
      'RECJAX_NUM_PROCESSES=$(echo "$endpoints" | tr , "\\n" | grep -c .)',
      # An endpoint is a hostname or name:id:ip; worker 0 coordinates.
      'RECJAX_COORDINATOR=$(echo "$endpoints" | cut -d, -f1 | awk -F: "{print \\$NF}")'
      f":{args.port}",
      "export RECJAX_PROCESS_ID RECJAX_NUM_PROCESSES RECJAX_COORDINATOR",
      "exec " + _shell(train)])
  command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}"]
  if args.project:
    command.append(f"--project={args.project}")
  return command + ["--worker=all", f"--command={remote}"]


def main(argv=None) -> int:
  args, train = parse(sys.argv[1:] if argv is None else argv)
  if args.cluster == "local":
    if args.dry_run:
      print(local_dry_run(args, train))
      return 0
    return run_local(args, train)
  if args.cluster == "slurm":
    text, submit = slurm_script(args, train), ["sbatch"]
  elif args.cluster == "kubernetes":
    text, submit = kubernetes_manifest(args, train), ["kubectl", "apply", "-f", "-"]
  else:
    text, submit = None, tpu_vm_command(args, train)
  if args.dry_run:
    print(text if text is not None else _shell(submit), end="" if text and text.endswith("\n") else "\n")
    return 0
  try:
    return subprocess.run(submit, input=text, text=True).returncode
  except FileNotFoundError:
    print(f"launch: {submit[0]} is not on PATH; --dry_run prints what to run", file=sys.stderr)
    return 127


if __name__ == "__main__":
  sys.exit(main())

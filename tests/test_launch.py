"""The launcher and the multi-process start: roles from the environment, a real 2-process run
on localhost, a failing process stopping the others, and the SLURM / Kubernetes / TPU VM jobs
run against stand-ins of their schedulers' tools, so each process is seen to get its role from
the scheduler's own variables.
"""

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml      # PyYAML comes with flax and orbax-checkpoint

from recjax import distributed
from recjax.errors import ConfigError
from tests.conftest import ADULT_CONFIG, ROOT, run_cli, summary_of

LAUNCH = str(ROOT / "launch" / "launch.py")
TRAIN = ("--config", f"{ADULT_CONFIG}:smoke", "--workdir", "/shared/run")
# An override with a space and parentheses: the quoting must survive every shell layer.
OVERRIDE = "--config.model.hidden=(64, 32)"


def launch(*args, timeout=120, env=None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, LAUNCH, *map(str, args)], capture_output=True, text=True,
                        timeout=timeout, cwd=ROOT, env=env or dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def fake_tools(directory, **scripts):
  """Executables named after the keys, standing in for a scheduler's tools and python3."""
  directory.mkdir(exist_ok=True)
  for name, body in scripts.items():
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
  return directory


# The stand-in interpreter prints the role it was given and its arguments, one per line.
FAKE_PYTHON = 'echo "ROLE $RECJAX_COORDINATOR $RECJAX_NUM_PROCESSES $RECJAX_PROCESS_ID"; printf "ARG %s\\n" "$@"\n'


def roles_and_args(stdout: str) -> tuple:
  roles = sorted(tuple(line.split()[1:]) for line in stdout.splitlines() if line.startswith("ROLE"))
  args = [line[4:] for line in stdout.splitlines() if line.startswith("ARG ")]
  return roles, args


def expected_args(count: int) -> list:
  return ["-m", "recjax.main", "train", *TRAIN, OVERRIDE] * count


# ---- recjax/distributed.py ----

def test_settings_alone_explicit_and_from_scheduler_variables():
  assert distributed.settings({}) is None
  assert distributed.settings({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}) is None   # no coordinator
  assert distributed.settings({"RECJAX_COORDINATOR": "h:1234", "RECJAX_NUM_PROCESSES": "4",
                               "RECJAX_PROCESS_ID": "3"}) == distributed.Settings("h:1234", 4, 3)
  assert distributed.settings({"RECJAX_COORDINATOR": "node1:9", "SLURM_NTASKS": "8",
                               "SLURM_PROCID": "5"}) == distributed.Settings("node1:9", 8, 5)
  assert distributed.settings({"RECJAX_COORDINATOR": "job-0.job:9", "RECJAX_NUM_PROCESSES": "2",
                               "JOB_COMPLETION_INDEX": "1"}) == distributed.Settings("job-0.job:9", 2, 1)
  # ours wins over the scheduler's
  assert distributed.settings({"RECJAX_COORDINATOR": "h:1", "RECJAX_NUM_PROCESSES": "2",
                               "RECJAX_PROCESS_ID": "0", "SLURM_PROCID": "1"}).process_id == 0
  # a single process needs no coordination service
  assert distributed.initialize({"RECJAX_COORDINATOR": "h:1", "RECJAX_NUM_PROCESSES": "1",
                                 "RECJAX_PROCESS_ID": "0"}) is None


@pytest.mark.parametrize("environ, message", [
    ({"RECJAX_COORDINATOR": "nohost"}, "RECJAX_COORDINATOR='nohost': expected host:port"),
    ({"RECJAX_COORDINATOR": "h:1", "RECJAX_PROCESS_ID": "0"}, "none of RECJAX_NUM_PROCESSES, SLURM_NTASKS"),
    ({"RECJAX_COORDINATOR": "h:1", "RECJAX_NUM_PROCESSES": "2"}, "none of RECJAX_PROCESS_ID, SLURM_PROCID"),
    ({"RECJAX_COORDINATOR": "h:1", "RECJAX_NUM_PROCESSES": "two", "RECJAX_PROCESS_ID": "0"},
     "RECJAX_NUM_PROCESSES='two': expected an integer >= 1"),
    ({"RECJAX_COORDINATOR": "h:1", "RECJAX_NUM_PROCESSES": "2", "SLURM_PROCID": "2"},
     "SLURM_PROCID='2': expected an integer in [0, 1]"),
])
def test_bad_roles_name_the_variable(environ, message):
  with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
    distributed.settings(environ)


def test_a_bad_role_is_a_clean_cli_error(tmp_path):
  env = dict(os.environ, RECJAX_COORDINATOR="127.0.0.1:1", RECJAX_NUM_PROCESSES="2",
             RECJAX_PROCESS_ID="7")
  result = subprocess.run([sys.executable, "-m", "recjax.main", "train", "--config", ADULT_CONFIG,
                           "--workdir", tmp_path], capture_output=True, text=True, env=env, cwd=ROOT)
  assert result.returncode == 2
  assert "recjax: error: environment variable RECJAX_PROCESS_ID='7'" in result.stderr


# ---- local processes ----

def test_two_processes_on_localhost_train_the_same_model_as_one(tmp_path, adult_run):
  """The same global batches on 2 processes as on 1: the same loss and eval metrics, and one
  checkpoint that a single process resumes from."""
  _, single = adult_run            # 1 process, the same smoke config
  workdir = tmp_path / "run"
  result = launch("--num_processes", 2, "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir,
                  "--config.train.progress_bar=False")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = summary_of(result)
  assert summary["steps"] == 30 and summary["resumed_from"] is None
  assert summary["train_rows"] == single["train_rows"] == 32561
  # Not bitwise: 2 devices sum the dense gradients in another order than 1 (the tables are
  # bitwise equal after a step, the dense parameters differ by an ulp), and 30 Adam steps
  # amplify that to a few 1e-5 in the loss.
  assert abs(summary["loss"] - single["loss"]) <= 1e-4, (summary["loss"], single["loss"])
  for name in ("auc", "log_loss", "accuracy"):
    assert abs(summary["eval"][name] - single["eval"][name]) <= 1e-4, name
  lines = result.stdout.splitlines()
  for rank in (0, 1):      # both trained, each output prefixed with its rank
    assert any(line.startswith(f"[{rank}] {{") and '"steps": 30' in line for line in lines)
  # Only process 0 wrote the summary file and the SavedModel.
  assert json.loads((workdir / "summary.json").read_text())["loss"] == summary["loss"]
  assert (workdir / "saved_model" / "saved_model.pb").exists()
  # The checkpoint restores onto one process, which trains on from step 30.
  resumed = summary_of(run_cli("train", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir,
                               "--config.train.progress_bar=False", "--config.train.steps=40",
                               "--no-eval", "--no-export"))
  assert resumed["resumed_from"] == 30 and resumed["steps"] == 40


def test_a_failing_process_stops_the_others(tmp_path):
  tools = fake_tools(tmp_path / "bin", python=(
      f'echo $$ > {tmp_path}/$RECJAX_PROCESS_ID.pid\n'
      # process 1 fails once the others are up (their pid files written), not before
      'if [ "$RECJAX_PROCESS_ID" = 1 ]; then\n'
      f'  for i in $(seq 500); do [ -s {tmp_path}/0.pid ] && [ -s {tmp_path}/2.pid ] && break; '
      'sleep 0.1; done\n'
      '  echo "process one fails" >&2; exit 3\n'
      'fi\n'
      'exec sleep 300\n'))
  result = launch("--num_processes", 3, *TRAIN, "--python", tools / "python", timeout=60)
  assert result.returncode == 3
  assert "[1] process one fails" in result.stderr
  assert "launch: process 1 exited with status 3; stopping the others" in result.stderr
  for rank in (0, 2):
    pid = int((tmp_path / f"{rank}.pid").read_text())
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)


def test_local_dry_run_prints_one_command_per_process():
  result = launch("--num_processes", 2, "--devices", 4, *TRAIN, OVERRIDE, "--dry_run")
  assert result.returncode == 0
  commands = [shlex.split(line) for line in result.stdout.splitlines()]
  assert len(commands) == 2
  for rank, command in enumerate(commands):
    env = dict(part.split("=", 1) for part in command[:4])
    assert env["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=4")
    assert env["RECJAX_COORDINATOR"].startswith("127.0.0.1:")
    assert (env["RECJAX_NUM_PROCESSES"], env["RECJAX_PROCESS_ID"]) == ("2", str(rank))
    assert command[4:] == [sys.executable, *expected_args(1)]


def test_unknown_arguments_are_refused():
  result = launch(*TRAIN, "--steps=3")
  assert result.returncode == 2 and "unrecognized argument '--steps=3'" in result.stderr
  result = launch(*TRAIN, "--cluster", "tpu_vm", "--dry_run")
  assert result.returncode == 2 and "--cluster=tpu_vm needs --tpu" in result.stderr


# ---- clusters, run against stand-ins of their tools ----

def test_slurm_script_takes_coordinator_count_and_rank_from_slurm(tmp_path):
  result = launch("--cluster", "slurm", "--num_processes", 2, *TRAIN, OVERRIDE, "--dry_run",
                  "--slurm_args=--partition=cpu --time=10")
  assert result.returncode == 0
  script = result.stdout
  assert "#SBATCH --nodes=2\n" in script and "#SBATCH --partition=cpu\n" in script
  for variable in ("$SLURM_JOB_NODELIST", "$((SLURM_JOB_ID % ", "$SLURM_NTASKS", "$SLURM_PROCID"):
    assert variable in script
  # scontrol expands the node list; srun starts the one command as 2 tasks with their ids.
  tools = fake_tools(tmp_path / "bin", python3=FAKE_PYTHON,
                     scontrol='[ "$*" = "show hostnames node[007-008]" ] && printf "node007\\nnode008\\n"\n',
                     srun='while [[ $1 == --* ]]; do shift; done\n'
                          'for i in 0 1; do SLURM_NTASKS=2 SLURM_PROCID=$i "$@"; done\n')
  env = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}", SLURM_JOB_ID="12345",
             SLURM_JOB_NODELIST="node[007-008]")
  ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)
  assert ran.returncode == 0, ran.stderr
  roles, args = roles_and_args(ran.stdout)
  port = str(12345 % 4096 + 61440)
  assert roles == [(f"node007:{port}", "2", "0"), (f"node007:{port}", "2", "1")]
  assert args == expected_args(2)


def test_kubernetes_indexed_job_with_a_headless_service():
  result = launch("--cluster", "kubernetes", "--num_processes", 4, "--image", "registry/recjax:1",
                  "--job_name", "ctr", "--port", 9999, *TRAIN, OVERRIDE, "--dry_run")
  assert result.returncode == 0
  service, job = yaml.safe_load_all(result.stdout)
  assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
  assert service["spec"]["selector"] == {"job-name": "ctr"}   # the label the Job controller sets
  spec = job["spec"]
  assert job["kind"] == "Job" and spec["completionMode"] == "Indexed"
  assert spec["completions"] == spec["parallelism"] == 4 and spec["backoffLimit"] == 0
  pod = spec["template"]["spec"]
  assert pod["subdomain"] == service["metadata"]["name"] == "ctr"
  container, = pod["containers"]
  assert container["image"] == "registry/recjax:1"
  assert container["command"] == ["python3", *expected_args(1)]
  env = {e["name"]: e for e in container["env"]}
  # Pod <job>-<index> of the Indexed Job is <job>-<index>.<subdomain> in DNS: pod 0 coordinates.
  assert env["RECJAX_COORDINATOR"]["value"] == "ctr-0.ctr:9999"
  assert env["RECJAX_NUM_PROCESSES"]["value"] == str(spec["completions"])
  assert env["RECJAX_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == (
      "metadata.annotations['batch.kubernetes.io/job-completion-index']")


@pytest.mark.parametrize("endpoints", ["t-w-0:0:10.0.0.5,t-w-1:1:10.0.0.6,t-w-2:2:10.0.0.7",
                                       "10.0.0.5,10.0.0.6,10.0.0.7"])
def test_tpu_vm_command_takes_its_role_from_the_tpu_metadata(tmp_path, endpoints):
  result = launch("--cluster", "tpu_vm", "--tpu", "my-tpu", "--zone", "us-central2-b",
                  "--chdir", tmp_path, *TRAIN, OVERRIDE, "--dry_run")
  assert result.returncode == 0
  command = shlex.split(result.stdout)
  assert command[:7] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", "--zone=us-central2-b"]
  assert command[7] == "--worker=all"
  remote = command[8].removeprefix("--command=")
  tools = fake_tools(tmp_path / "bin", python3=FAKE_PYTHON, curl=(
      'case "${@: -1}" in\n'
      f'  */worker-network-endpoints) echo "{endpoints}" ;;\n'
      '  */agent-worker-number) echo "$WORKER" ;;\n'
      '  *) exit 22 ;;\n'
      'esac\n'))
  stdout = ""
  for worker in range(3):      # what --worker=all runs on each worker of the slice
    env = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}", WORKER=str(worker))
    ran = subprocess.run(["bash", "-c", remote], capture_output=True, text=True, env=env, timeout=30)
    assert ran.returncode == 0, ran.stderr
    stdout += ran.stdout
  roles, args = roles_and_args(stdout)
  assert roles == [("10.0.0.5:8476", "3", str(w)) for w in range(3)]
  assert args == expected_args(3)

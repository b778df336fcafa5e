"""Joins this process to a multi-process JAX run when its environment says it is one of many.

The launcher (`launch/launch.py`) and the cluster recipes it renders start the same command
on every host and tell each process its role through three variables, read here before JAX
touches a device:

  RECJAX_COORDINATOR    host:port of process 0 (JAX's coordination service)
  RECJAX_NUM_PROCESSES  how many processes take part
  RECJAX_PROCESS_ID     this process's rank, 0 .. RECJAX_NUM_PROCESSES - 1

The count and the rank fall back on the scheduler's own variables (SLURM, a Kubernetes
Indexed Job, a TPU VM slice), so a hand-written job script only has to name the coordinator.
Without RECJAX_COORDINATOR the process runs alone, as `recjax train` always has. CPU
processes talk through gloo collectives, the only ones that cross process boundaries on CPU.
"""

import dataclasses
import os
from typing import Mapping

from recjax.errors import ConfigError

# Where each value is looked up, first set wins: ours, then each scheduler's own.
COORDINATOR = ("RECJAX_COORDINATOR",)
NUM_PROCESSES = ("RECJAX_NUM_PROCESSES", "SLURM_NTASKS")
PROCESS_ID = ("RECJAX_PROCESS_ID", "SLURM_PROCID", "JOB_COMPLETION_INDEX", "TPU_WORKER_ID")
INITIALIZATION_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class Settings:
  coordinator: str
  num_processes: int
  process_id: int


def _lookup(environ: Mapping[str, str], names: tuple) -> tuple:
  for name in names:
    if environ.get(name, "") != "":
      return name, environ[name]
  return None, None


def _integer(name: str, value: str, low: int, high: int | None = None) -> int:
  try:
    number = int(value)
  except ValueError:
    number = None
  if number is None or number < low or (high is not None and number > high):
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    raise ConfigError(f"environment variable {name}={value!r}: expected {allowed}")
  return number


def settings(environ: Mapping[str, str] = os.environ) -> Settings | None:
  """This process's role from `environ`, or None when it runs alone."""
  _, coordinator = _lookup(environ, COORDINATOR)
  if coordinator is None:
    return None
  host, _, port = coordinator.rpartition(":")
  if not host or not port.isdigit():
    raise ConfigError(f"environment variable RECJAX_COORDINATOR={coordinator!r}: expected host:port")
  count_name, count = _lookup(environ, NUM_PROCESSES)
  id_name, rank = _lookup(environ, PROCESS_ID)
  for value, names in ((count, NUM_PROCESSES), (rank, PROCESS_ID)):
    if value is None:
      raise ConfigError(f"RECJAX_COORDINATOR is set but none of {', '.join(names)} is")
  num_processes = _integer(count_name, count, 1)
  process_id = _integer(id_name, rank, 0, num_processes - 1)
  return Settings(coordinator, num_processes, process_id)


def initialize(environ: Mapping[str, str] = os.environ) -> Settings | None:
  """Calls `jax.distributed.initialize` once if `environ` describes a multi-process run."""
  role = settings(environ)
  if role is None or role.num_processes == 1:
    return None
  import jax
  if jax.distributed.is_initialized():
    return role
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # the coordinator listens on the address it is given (127.0.0.1 for a local run), not on
  # every interface: its service has no authentication (README: securing a cluster's)
  jax.distributed.initialize(coordinator_address=role.coordinator,
                             coordinator_bind_address=role.coordinator,
                             num_processes=role.num_processes, process_id=role.process_id,
                             initialization_timeout=INITIALIZATION_TIMEOUT_S)
  return role

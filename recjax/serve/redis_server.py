"""A throwaway local redis-server on a free port, for tests and benchmarks.

Debian's `redis-server` binary, persistence off (`--save "" --appendonly no`), its working
directory a temporary one, bound to 127.0.0.1 only. `start` returns once the server answers
(and answers with its own pid: a server of another test on the same port does not count), so
a caller never races the startup; `stop` ends that one process by its pid.
"""

import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import redis

BINARY = "redis-server"


def free_port() -> int:
  """A TCP port of 127.0.0.1 that nothing listens on now: the one the kernel gives a socket
  bound to port 0 (another process could take it before redis-server does; none here do)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


class _PortTaken(Exception):
  pass


class RedisServer:
  """`with RedisServer() as server: redis.Redis.from_url(server.url)`."""

  def __init__(self, binary: str = BINARY, startup_s: float = 10.0):
    self.binary, self.startup_s = binary, startup_s
    self.port, self.process, self._dir = None, None, None

  @property
  def url(self) -> str:
    return f"redis://127.0.0.1:{self.port}/0"

  @property
  def pid(self) -> int:
    return self.process.pid

  def start(self, attempts: int = 3) -> "RedisServer":
    """Starts the server and waits until it answers; a port taken between `free_port` and
    the server's bind is retried with another one."""
    path = shutil.which(self.binary)
    if path is None:
      raise FileNotFoundError(f"{self.binary} is not installed (on PATH); install it with "
                              "`apt-get install -y redis-server`")
    self._dir = tempfile.mkdtemp(prefix="recjax-redis-")
    for attempt in range(attempts):
      self.port = free_port()
      self.process = subprocess.Popen(
          [path, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--dir", self._dir, "--logfile", self._log],
          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
      try:
        self._wait_until_up()
        return self
      except _PortTaken:
        if attempt + 1 == attempts:
          self.stop()
          raise RuntimeError(f"redis-server found no free port in {attempts} tries") from None
      except BaseException:
        self.stop()
        raise

  @property
  def _log(self) -> str:
    return str(pathlib.Path(self._dir) / f"redis-{self.port}.log")

  def _wait_until_up(self) -> None:
    deadline = time.monotonic() + self.startup_s
    with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0) as client:
      while True:
        if self.process.poll() is not None:
          log = pathlib.Path(self._log).read_text(errors="replace")[-2000:]
          if "Address already in use" in log:
            raise _PortTaken()
          raise RuntimeError(f"redis-server exited with {self.process.returncode} on start: "
                             f"{log}")
        try:                  # ours, not another server that holds the port
          if client.info("server")["process_id"] == self.process.pid:
            return
        except (redis.ConnectionError, redis.TimeoutError):
          pass
        if time.monotonic() > deadline:
          raise TimeoutError(f"redis-server on port {self.port} did not answer within "
                             f"{self.startup_s} s")
        time.sleep(0.02)

  def stop(self, timeout_s: float = 5.0) -> None:
    """Terminates the server by its pid (SIGKILL if it outlives `timeout_s`)."""
    if self.process is not None and self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(timeout_s)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    if self._dir:
      shutil.rmtree(self._dir, ignore_errors=True)
      self._dir = None

  def __enter__(self) -> "RedisServer":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

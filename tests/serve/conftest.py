"""A real redis-server on a free port for the serve tests, stopped by its pid at the end."""

import shutil

import pytest

from recjax.serve import redis_server


@pytest.fixture(scope="session")
def redis_url():
  if shutil.which(redis_server.BINARY) is None:
    pytest.skip("redis-server is not installed; `apt-get install -y redis-server` to run "
                "the feature store tests")
  server = redis_server.RedisServer().start()
  try:
    yield server.url
  finally:
    server.stop()

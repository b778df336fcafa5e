"""`recjax serve`: TF-Serving's REST API and a ranking endpoint, on aiohttp.

aiohttp is one package with its own asynchronous server (no ASGI layer between the socket
and the handler), which keeps the per-request overhead small on 2 cores, and its client
is what the tests and the load generator use. Handlers only parse, check and answer; the
work is one call each: `rest.parse_predict` + one signature call, or `RankService`. The model
call runs in a small thread pool (TensorFlow releases the GIL), so the event loop keeps
accepting requests while a batch is scored. Routes (`<name>` is `export.model_name`):

  GET  /v1/models/<name>[/versions/<v>]            version status
  GET  /v1/models/<name>[/versions/<v>]/metadata   signatures
  POST /v1/models/<name>[/versions/<v>]:predict    instances / inputs
  POST /v1/models/<name>:rank                      one user, N candidates
  GET  /metrics                                    Prometheus text
"""

import asyncio
import concurrent.futures
import dataclasses
import json
import time

from aiohttp import web

from recjax.export import ranking
from recjax.export import writes
from recjax.export.saved_model import SIGNATURE
from recjax.replay import writer as replay_writer
from recjax.serve import rest
from recjax.serve import store as store_lib
from recjax.serve.errors import StoreError
from recjax.serve.metrics import Metrics
from recjax.serve import versions as versions_lib
from recjax.serve.ranker import RankService

NOT_LOADED = "no version of the model is loaded yet"


def _error(status: int, message: str) -> web.Response:
  return web.json_response({"error": message}, status=status)


class Server:
  """The handlers of one served model: its `versions`, `store` (None: no :rank), `metrics`."""

  def __init__(self, experiment, versions, store=None, metrics=None, threads: int = 2,
               replay=None):
    self.name = experiment.export.model_name
    self.metrics = metrics or Metrics()
    self.replay = replay                  # a replay.writer.ReplayWriter, or None
    if replay is not None:                # its counts, read when /metrics is
      for name in replay.counts():
        self.metrics.replay.labels(name).set_function(
            lambda name=name: replay.counts()[name])
    self.serving = experiment.serving
    self.versions = versions
    self.executor = concurrent.futures.ThreadPoolExecutor(threads, "recjax-model")
    self.ranker = None
    if store is not None and self.serving.item is not None and self.serving.item.columns:
      self.ranker = RankService(experiment, store, versions, self.metrics, self.executor)

  def app(self) -> web.Application:
    app = web.Application(client_max_size=self.serving.max_request_bytes,
                          middlewares=[self._count])
    base = "/v1/models/{name}"
    version = base + "/versions/{version}"
    app.add_routes([
        web.get(base, self.status), web.get(version, self.status),
        web.get(base + "/metadata", self.metadata),
        web.get(version + "/metadata", self.metadata),
        web.post(base + ":predict", self.predict), web.post(version + ":predict", self.predict),
        web.post(base + ":rank", self.rank),
        web.get("/metrics", self.prometheus)])
    return app

  @web.middleware
  async def _count(self, request, handler):
    """Every answer counted by endpoint and code, timed; an unexpected error is a 500 with
    its message (and counted), never a dropped connection."""
    start = time.perf_counter()
    endpoint = request.path.rsplit(":", 1)[-1] if ":" in request.path else (
        "metrics" if request.path == "/metrics" else "status")
    try:
      response = await handler(request)
    except web.HTTPException as e:
      response = _error(e.status, e.reason)
    except Exception as e:      # noqa: BLE001 - the server keeps serving; the message says what
      response = _error(500, f"{type(e).__name__}: {e}")
    self.metrics.requests.labels(endpoint, str(response.status)).inc()
    self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
    return response

  def _loaded(self, request):
    """The version a request is for (the served one, or the one it pins), or NotFound."""
    name = request.match_info["name"]
    if name != self.name:
      raise rest.NotFound(f"Servable not found for request: Latest({name})")
    loaded = self.versions.current
    if loaded is None:
      raise rest.NotFound(NOT_LOADED)
    pinned = request.match_info.get("version")
    if pinned is not None and pinned != str(loaded.version):
      raise rest.NotFound(f"Servable not found for request: Specific({name}, {pinned}); "
                          f"serving version {loaded.version}")
    return loaded

  async def _body(self, request):
    try:
      return json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
      raise rest.BadRequest(f"the request body is over {self.serving.max_request_bytes} bytes "
                            "(serving.max_request_bytes)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise rest.BadRequest(f"the request body is not JSON: {e}") from None

  async def status(self, request):
    try:
      self._loaded(request)
    except rest.NotFound as e:
      return _error(404, str(e))
    return web.json_response({"model_version_status": self.versions.status()})

  async def metadata(self, request):
    try:
      loaded = self._loaded(request)
    except rest.NotFound as e:
      return _error(404, str(e))
    return web.json_response(rest.metadata(self.name, loaded))

  async def predict(self, request):
    try:
      loaded = self._loaded(request)
      body = await self._body(request)
      signature = (body.get("signature_name") if isinstance(body, dict) else None) or SIGNATURE
      if signature not in loaded.signatures:
        raise rest.BadRequest(f"signature_name: {signature!r} is not one of "
                              f"{', '.join(sorted(loaded.signatures))}")
      columns, rows = rest.parse_predict(body, loaded.inputs(signature),
                                         self.serving.max_candidates,
                                         same_length=signature != ranking.SIGNATURE)
      function = loaded.signatures[signature]
      count = max((len(v) for v in columns.values()), default=0)
      if count == 0:                  # an empty batch: an empty answer, no model call
        outputs = {name: [] for name in loaded.outputs(signature)}
      else:
        self.versions.record(signature, count)
        outputs = await asyncio.get_running_loop().run_in_executor(
            self.executor, rest.call, function, columns)
    except rest.NotFound as e:
      return _error(404, str(e))
    except rest.BadRequest as e:
      return _error(400, str(e))
    return web.json_response(rest.format_predict(outputs, rows))

  async def rank(self, request):
    if self.ranker is None:
      return _error(404, f"{self.name} has no :rank (it needs serving.item in the config "
                    "and a store)")
    try:
      self._loaded(request)
      body = await self._body(request)
      parsed = self.ranker.parse(body)
      scored = await self.ranker.score(parsed)
    except rest.NotFound as e:
      return _error(404, str(e))
    except rest.BadRequest as e:
      return _error(400, str(e))
    except StoreError as e:
      return _error(503, str(e))
    scores = self.ranker.ranking_scores(scored)
    if self.replay is not None:
      self.replay.log(scored, parsed["request_id"], scores)
    return web.json_response(self.ranker.answer(parsed, scored, scores))

  async def prometheus(self, request):
    loaded = self.versions.current
    self.metrics.version.set(loaded.version if loaded else 0)
    self.metrics.loads.set(self.versions.loads)
    return web.Response(body=self.metrics.text(), content_type="text/plain")


def serve(experiment, workdir, host: str = "127.0.0.1", port: int = 8501,
          store_url: str | None = None) -> dict:
  """Serves the newest version under the workdir's base path until interrupted, polling for
  newer ones every `serving.poll_seconds`. The store is `store_url`, else `serving.store`,
  else the embedded one (the entities' Parquet files, in memory)."""
  if store_url:
    experiment = dataclasses.replace(
        experiment, serving=dataclasses.replace(experiment.serving, store=store_url))
  versions = versions_lib.of(experiment, writes.base_path(experiment, workdir))
  versions.poll()
  versions.start(experiment.serving.poll_seconds)
  store = store_lib.open_store(experiment) if experiment.serving.entities() else None
  replay = replay_writer.open_writer(experiment, workdir)
  server = Server(experiment, versions, store, replay=replay)
  served = versions.current.version if versions.current else None
  print(json.dumps({"serving": experiment.export.model_name, "version": served,
                    "url": f"http://{host}:{port}/v1/models/{experiment.export.model_name}",
                    "store": experiment.serving.store or "embedded",
                    **({"replay": str(replay.directory), "replay_rows_lost": replay.rows_lost}
                       if replay else {})}), flush=True)
  try:
    web.run_app(server.app(), host=host, port=port, print=None)
  finally:
    versions.stop()
    if replay is not None:
      replay.close()
  return {"served": experiment.export.model_name, "version": served}

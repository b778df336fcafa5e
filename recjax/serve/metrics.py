"""What a server counts, in Prometheus' text format (`GET /metrics`).

One registry per server (not the process-global default), so tests run several servers in
one process and each counts only its own requests. The latency buckets are the milliseconds
a ranking service is judged on (a p99 of 20 ms is the target on 2 cores).
"""

import prometheus_client as prom

BUCKETS_S = (0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
  """The counters of one server."""

  def __init__(self):
    self.registry = prom.CollectorRegistry()
    r = self.registry
    self.requests = prom.Counter("recjax_requests", "Requests answered, by endpoint and code",
                                 ["endpoint", "code"], registry=r)
    self.latency = prom.Histogram("recjax_request_seconds", "Request latency, by endpoint",
                                  ["endpoint"], buckets=BUCKETS_S, registry=r)
    self.candidates = prom.Counter("recjax_rank_candidates", "Candidates scored", registry=r)
    self.cache = prom.Counter("recjax_item_cache", "Item cache lookups, by result",
                              ["result"], registry=r)
    self.fallback_fetches = prom.Counter(
        "recjax_user_fallback_fetches", "Rank requests whose user features were fetched "
        "from the store (not given by the caller)", registry=r)
    self.defaulted = prom.Counter(
        "recjax_defaulted_values", "Raw values served as their default, by reason "
        "(missing_entity, missing_context, store_unavailable)", ["reason"], registry=r)
    self.store_errors = prom.Counter("recjax_store_errors", "Store calls that failed or "
                                     "timed out (served with defaults)", registry=r)
    self.version = prom.Gauge("recjax_model_version", "The served model version", registry=r)
    self.loads = prom.Gauge("recjax_model_loads", "Model versions loaded since the start",
                            registry=r)
    self.replay = prom.Gauge(
        "recjax_replay", "The replay log's counts since the start: rows_logged, rows_written, "
        "rows_dropped (buffer full), rows_failed (a part not written), rows_lost (accepted "
        "by a killed server, never written), parts_written, requests_sampled_out",
        ["count"], registry=r)

  def text(self) -> bytes:
    return prom.generate_latest(self.registry)

  def value(self, name: str, **labels) -> float:
    """A sample's current value (tests and the benchmark read counters through this)."""
    return self.registry.get_sample_value(name, labels) or 0.0

"""Online serving: the feature store and the ranking server, on top of `export`.

The store: `layout` (an entity's packed raw values and key names), `rows` (Parquet files
read and checked as batches), `loader` (a versioned load with an atomic switch), `store`
(Redis, and the embedded default from Parquet), `redis_server` (a local redis-server for
tests and benchmarks), `errors`. The server: `app` (aiohttp routes), `rest` (TF-Serving's
REST formats), `ranker` (the :rank work), `versions` (loading and swapping model versions),
`defaults` (the value of a missing raw column), `metrics` (Prometheus).

Layering: on top, beside `main`; imports `export`, `features`, `config`'s specs, never `train`.
"""

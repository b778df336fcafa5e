"""A small shop experiment (users, items, a request context) and Parquet files of its items,
shared by the store tests and the loads they run in subprocesses."""

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recjax import config as config_lib

ITEM_COLUMNS = ("item_id", "price", "category", "title", "tags", "rating")
USER_COLUMNS = ("age", "hist_item")


def experiment(item_files=(), user_files=(), store="", namespace=""):
  config = ml_collections.ConfigDict()
  config.data = dict(train=("unused.csv",))
  config.label = dict(column="label")
  config.features = dict(
      user_id=dict(kind="id", hash_bucket_size=97),
      age=dict(kind="numeric", mean=40.0, std=12.5),
      hist_item=dict(kind="sequence", max_len=4, hash_bucket_size=200, table="item_id"),
      item_id=dict(kind="id", hash_bucket_size=200),
      price=dict(kind="numeric", log1p=True),
      rating=dict(kind="numeric", mean=3.0, std=1.0),
      category=dict(kind="id", vocabulary=("shoes", "books", "中文")),
      title=dict(kind="id", hash_bucket_size=50),
      tags=dict(kind="tag", max_len=3, hash_bucket_size=50),
      device=dict(kind="id", vocabulary=("ios", "android")))      # the request's context
  config.groups = dict(deep=dict(features=("user_id", "item_id", "hist_item", "category",
                                           "title", "tags", "device"), dim=4))
  config.model = dict(name="deepfm", first_order_group="deep", fm_group="deep")
  config.serving = dict(
      user=dict(key="user_id", columns=USER_COLUMNS, files=tuple(map(str, user_files))),
      item=dict(key="item_id", columns=ITEM_COLUMNS, files=tuple(map(str, item_files))),
      store=store, namespace=namespace)
  return config_lib.experiment(config, "shop")


def items(rows: int, tag: str = "a", seed: int = 0, first: int = 0) -> pa.Table:
  """Items `first`.. with float64 prices (rounded to float32 when stored), unicode titles
  holding `tag` (so two loads are told apart), some null titles, and int ratings."""
  rng = np.random.default_rng(seed)
  ids = np.arange(first, first + rows)
  titles = [None if i % 97 == 0 else f"{tag} title {i} ☕ é 中文" for i in ids]
  return pa.table({
      "item_id": [f"item{i}" for i in ids],
      "price": rng.lognormal(3.0, 1.0, rows),                  # float64
      "category": np.array(["shoes", "books", "中文"])[ids % 3],
      "title": pa.array(titles, pa.string()),
      "tags": [f"t{i % 5}|t{i % 7}|{tag}" for i in ids],
      "rating": (ids % 5 + 1).astype(np.int64),               # an int column read as float
      "extra": np.zeros(rows),                                 # a column no entity stores
  })


def write(table: pa.Table, path, row_group_size: int = 10_000):
  pq.write_table(table, str(path), row_group_size=row_group_size)
  return str(path)


def first_rows(table: pa.Table, entities, root) -> dict:
  """Entity tables from a log: for each (entity, key, columns), the first row of each key,
  the key as a string, written to `root/<entity>s.parquet`; {entity: path}."""
  files = {}
  for entity, key, columns in entities:
    keys = table[key].to_pylist()
    first = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())
    part = table.select(list(columns)).take(first)
    part = part.set_column(part.schema.get_field_index(key), key, part[key].cast(pa.string()))
    files[entity] = root / f"{entity}s.parquet"
    pq.write_table(part, files[entity])
  return files

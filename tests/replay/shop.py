"""The shop experiment of the store tests with a replay log, and scored requests made by hand
(what `RankService.score` returns), for the writer, join and coverage tests."""

import dataclasses

import numpy as np

from recjax.export.spec import ReplaySpec
from recjax.serve.ranker import Scored
from tests.serve import entities

ONE_ROW = ("user_id", "age", "hist_item", "device")
ITEM = ("item_id", "price", "category", "title", "tags", "rating")


def experiment(**replay):
  base = entities.experiment()
  spec = ReplaySpec(**{"flush_seconds": 0.2, "label_window_s": 60.0, **replay})
  return dataclasses.replace(base, serving=dataclasses.replace(base.serving, replay=spec))


def scored(event_id: str, user: str, items: list[str], version: int = 1, age: float = 30.0,
           device: str = "ios", missing: dict | None = None, defaulted_user=None) -> Scored:
  """A scored request for `user` over `items`; `missing` {index: reason} items defaulted."""
  n = len(items)
  columns = {"user_id": [user], "age": np.asarray([age], np.float32),
             "hist_item": [f"{items[0]}|x"], "device": [device],
             "item_id": tuple(items), "price": np.arange(n, dtype=np.float32) + 0.5,
             "category": ("shoes",) * n, "title": tuple(f"t {k}" for k in items),
             "tags": ("a|b",) * n, "rating": np.full(n, 3.0, np.float32)}
  scores = {"probability": np.linspace(0.1, 0.9, n, dtype=np.float32).reshape(n, 1)}
  return Scored(event_id, version, user, list(items), columns, dict(defaulted_user or {}),
                dict(missing or {}), scores)

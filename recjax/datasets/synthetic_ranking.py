"""A synthetic ranking world: users, items and impression logs, clicks from a hidden teacher.

The ranking service, feature replay and the serving benchmark need what no public dataset
here has: entity tables (what the feature store holds) and impression logs whose rows are
exactly those tables' rows joined with a request's context, with a label a model can learn.
`prepare` writes, deterministically from one numpy Generator seed, as Parquet:

  users.parquet   user_id ("u123") + USER_COLUMNS: categorical strings, numbers, the
                  multi-value `liked_categories` ("c1|c7") and `hist_items` ("i5|i9", items
                  of liked categories, most recent last; "" for a user without history)
  items.parquet   item_id ("i123") + ITEM_COLUMNS: category, brand, seller, price, ctr_7d,
                  tags ("t3|t17"), ...
  train.parquet,  impressions: event_id (unique over both), timestamp (int seconds, sorted;
  eval.parquet    eval's days follow train's), user_id, item_id, CONTEXT_COLUMNS, every user
                  and item column joined in unchanged, and `click` (int 0/1)

So a training row is what serving assembles from the store and the request: the parity the
serving path relies on (tests/datasets/test_synthetic_ranking.py checks it row by row).

Users and items have Zipf-like popularity (impressions per user and per item, categories,
cities, brands). Half of the impressions show an item of one of the user's liked
categories, the other half one drawn by global popularity. The click is
Bernoulli(sigmoid(logit)) of a hidden teacher, its weights in `TEACHER`:
  - the dot product of latent user and item vectors (dim 8): a user's is the mean of its
    liked categories' vectors plus its segment's plus noise, an item's its category's plus its
    brand's plus noise, so the ids, liked_categories x category and segment x category carry it;
  - a bonus when the item's category is one the user likes;
  - per-category, per-brand, per-tag and per-age-bucket biases;
  - crosses: city x category, gender x category, hour x page, income x price;
  - numeric effects: a hidden item quality (seen through noisy ctr_7d and rating), price,
    discount, freshness (age_days), user activity; membership, shipping, promotion, network;
  - a position bias, -0.5 log(position).
The base logit is solved (bisection) for a 10% click rate on train; `meta.json` records the
click rates and the teacher's own eval AUC (the ceiling a model can reach).

Measured (2 busy CPU cores): smoke (500 users, 2,000 items, 20,000 + 5,000 impressions,
1.2 MB) in 0.15 s; full (100,000 users, 200,000 items, 1,500,000 + 200,000 impressions:
train.parquet 105 MB, 124 MB in all, 1.2 GB of memory) in 7.5 s. `prepare` takes the sizes
as arguments, so a store benchmark can write a larger item table: items=2_000_000 (69 MB)
with the full logs takes 19 s.

`recjax prepare --dataset synthetic_ranking --variant full|smoke` (or `prepare_variant`)
writes them to `paths.prepared("synthetic_ranking", variant)`; configs/synthetic_ranking.py
names those paths and loading it writes nothing. A second call with the same parameters is a
no-op (`meta.json`).
"""

import json
import os
import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recjax.datasets import paths

DATASET = "synthetic_ranking"
VARIANTS = {
    "full": dict(users=100_000, items=200_000, train_rows=1_500_000, eval_rows=200_000),
    "smoke": dict(users=500, items=2_000, train_rows=20_000, eval_rows=5_000),
}
NAMES = ("users.parquet", "items.parquet", "train.parquet", "eval.parquet", "meta.json")
VERSION = 1

# The value spaces, which configs/synthetic_ranking.py reads for its vocabularies
GENDERS = ("F", "M", "U")
AGE_BUCKETS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
DEVICES = ("android", "ios", "web", "tablet")
LANGUAGES = ("en", "es", "pt", "fr", "de", "it", "ja", "zh")
INCOMES = ("low", "mid", "high")
YES_NO = ("no", "yes")
COLORS = ("black", "white", "grey", "red", "blue", "green", "yellow", "pink", "brown",
          "purple", "orange", "beige")
SHIPPING = ("standard", "free", "express")
PAGES = ("home", "search", "category", "detail", "cart")
NETWORKS = ("wifi", "5g", "4g", "3g")
CITIES = tuple(f"city{i}" for i in range(300))
SEGMENTS = tuple(f"seg{i}" for i in range(12))
CATEGORIES = tuple(f"c{i}" for i in range(60))
SUBCATEGORIES = 5                      # per category: "c3_0" .. "c3_4"
TAGS = tuple(f"t{i}" for i in range(400))
MAX_LIKED, MAX_HISTORY, MAX_TAGS, MAX_POSITION = 4, 10, 5, 30
LATENT = 8
NOISE = 0.6                            # each latent's own part: learnable from its id alone

USER_COLUMNS = ("gender", "age_bucket", "city", "device", "segment", "language", "income",
                "is_member", "activity", "tenure_days", "avg_spend", "liked_categories",
                "hist_items")
ITEM_COLUMNS = ("category", "subcategory", "brand", "seller", "price", "discount", "ctr_7d",
                "impressions_7d", "age_days", "rating", "num_reviews", "tags", "color",
                "shipping", "is_promoted")
CONTEXT_COLUMNS = ("hour", "weekday", "page", "position", "network")
LOG_COLUMNS = (("event_id", "timestamp", "user_id", "item_id") + CONTEXT_COLUMNS
               + USER_COLUMNS + ITEM_COLUMNS + ("click",))

START = 1_699_920_000                  # 2023-11-14 00:00 UTC, a Tuesday
TRAIN_DAYS, EVAL_DAYS = 14, 2
CLICK_RATE = 0.10
# The teacher's weights (see the module docstring); scales are standard deviations
TEACHER = dict(dot=0.8, liked=0.5, category=0.4, brand=0.4, tag=0.2, age_bucket=0.15,
               city_category=0.5, gender_category=0.3, hour_page=0.4, income_price=0.25,
               price=-0.35, discount=1.5, fresh=0.4, activity=0.25, member=0.2,
               promoted=-0.2, position=-0.5, shipping=(0.0, 0.2, 0.1),
               network=(0.0, 0.0, -0.1, -0.3))
HOURS = np.array([1, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 12, 12, 10, 6, 3],
                 float)


def work_dir(variant: str) -> pathlib.Path:
  return paths.prepared(DATASET, variant)


def files(variant: str) -> dict[str, str]:
  """The paths of a variant's files, which may be absent (a config names them and still
  validates; a run names a missing one and the command that writes it)."""
  if variant not in VARIANTS:
    raise ValueError(f"synthetic_ranking variant {variant!r}; valid: {', '.join(VARIANTS)}")
  return {name: str(work_dir(variant) / name) for name in NAMES}


def prepare_variant(variant: str, source: str | os.PathLike | None = None) -> dict[str, str]:
  """Writes the files `files(variant)` names. `source` is unused (it is in the signature
  `recjax prepare` calls): the world is generated, there is no raw data to read."""
  files(variant)                                            # checks the name
  return prepare(work_dir(variant), **VARIANTS[variant])


def prepare(out: str | os.PathLike, *, users: int, items: int, train_rows: int,
            eval_rows: int, seed: int = 0) -> dict[str, str]:
  """Writes users, items, train and eval Parquet files and meta.json into `out`."""
  if items < len(CATEGORIES):
    raise ValueError(f"items={items}: at least {len(CATEGORIES)}, one per category")
  out = pathlib.Path(out)
  params = dict(users=users, items=items, train_rows=train_rows, eval_rows=eval_rows,
                seed=seed, version=VERSION)
  written = {name: str(out / name) for name in NAMES}
  meta = out / "meta.json"
  if meta.exists() and json.loads(meta.read_text()).get("params") == params:
    return written
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  world = _world(rng)
  item_table, item = _items(rng, world, items)
  user_table, user = _users(rng, world, users, item)
  logs, stats = _logs(rng, world, user_table, user, item_table, item, train_rows, eval_rows)
  tables = {"users": user_table, "items": item_table,
            "train": logs.slice(0, train_rows), "eval": logs.slice(train_rows)}
  for name, table in tables.items():
    _write(table, out / f"{name}.parquet")
  meta.write_text(json.dumps({"params": params, **stats}, indent=1) + "\n")
  return written


def _write(table: pa.Table, path: pathlib.Path) -> None:
  # row groups of 64K rows: input workers split a Parquet file between its row groups
  tmp = path.with_name(f".{path.name}.{os.getpid()}")
  pq.write_table(table, tmp, row_group_size=1 << 16)
  tmp.replace(path)                 # atomic: a concurrent reader sees a whole file


def _zipf(n: int, s: float) -> np.ndarray:
  """Probabilities 1 / rank^s of ranks 1..n (index 0 the most common)."""
  w = 1.0 / np.arange(1, n + 1) ** s
  return w / w.sum()


def _strings(vocabulary, index) -> pa.Array:
  return pa.array(np.asarray(vocabulary, object)[index], pa.string())


def _keys(prefix: str, n: int) -> pa.Array:
  return pc.binary_join_element_wise(prefix, pa.array(np.arange(n)).cast(pa.string()), "")


def _joined(prefix: str, index: np.ndarray, lengths: np.ndarray) -> pa.Array:
  """Rows of `index` [N, L], the first `lengths` of each, as "prefix3|prefix8" strings."""
  flat = index[np.arange(index.shape[1]) < lengths[:, None]]
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
  tokens = pc.binary_join_element_wise(prefix, pa.array(flat).cast(pa.string()), "")
  return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), tokens), "|")


def _world(rng) -> dict:
  """The teacher's tables that do not depend on the sizes."""
  t, c = TEACHER, len(CATEGORIES)
  return dict(
      category_vec=rng.normal(size=(c, LATENT)),
      segment_vec=rng.normal(size=(len(SEGMENTS), LATENT)),
      category_bias=rng.normal(0, t["category"], c),
      tag_bias=rng.normal(0, t["tag"], len(TAGS)),
      age_bias=rng.normal(0, t["age_bucket"], len(AGE_BUCKETS)),
      city_category=rng.normal(0, t["city_category"], (len(CITIES), c)),
      gender_category=rng.normal(0, t["gender_category"], (len(GENDERS), c)),
      hour_page=rng.normal(0, t["hour_page"], (24, len(PAGES))),
      category_price=rng.uniform(2.0, 5.0, c))


def _items(rng, world, n: int) -> tuple[pa.Table, dict]:
  """The item table and the hidden values the teacher reads."""
  v = _item_values(rng, world, n)
  table = pa.table({
      "item_id": _keys("i", n), "category": _strings(CATEGORIES, v["category"]),
      "subcategory": pc.binary_join_element_wise(
          _strings(CATEGORIES, v["category"]), pa.array(v["subcategory"]).cast(pa.string()),
          "_"),
      "brand": _keys("b", v["brands"]).take(v["brand"]),
      "seller": _keys("s", v["sellers"]).take(v["seller"]),
      **{c: v[c] for c in ("price", "discount", "ctr_7d", "impressions_7d", "age_days",
                           "rating", "num_reviews")},
      "tags": _joined("t", v["tags"], v["n_tags"]), "color": _strings(COLORS, v["color"]),
      "shipping": _strings(SHIPPING, v["shipping"]),
      "is_promoted": _strings(YES_NO, v["promoted"])})
  return table, _item_teacher(rng, world, v)


def _item_values(rng, world, n: int) -> dict:
  """Value indices and numbers of the item columns, and the hidden quality and popularity."""
  c = len(CATEGORIES)
  category = rng.choice(c, n, p=_zipf(c, 1.0))
  category[:c] = np.arange(c)                       # every category has an item
  brands, sellers = max(20, n // 50), max(50, n // 20)
  v = dict(category=category, brands=brands, sellers=sellers,
           brand=rng.choice(brands, n, p=_zipf(brands, 1.0)),
           seller=rng.choice(sellers, n, p=_zipf(sellers, 0.8)),
           log_price=world["category_price"][category] + rng.normal(0, 0.6, n),
           discount=np.where(rng.random(n) < 0.6, 0.0, rng.integers(1, 11, n) * 0.05).round(2),
           quality=rng.normal(0, 0.6, n), popularity=_zipf(n, 0.9)[rng.permutation(n)])
  v["price"] = np.exp(v["log_price"]).round(2)
  v["impressions_7d"] = rng.poisson(v["popularity"] * n * 50)
  v["age_days"] = 1 + rng.exponential(200, n).astype(np.int64)
  v["n_tags"] = rng.integers(1, MAX_TAGS + 1, n)
  # distinct tags per item: a popular first tag, then strictly increasing offsets
  steps = np.concatenate([rng.choice(len(TAGS), (n, 1), p=_zipf(len(TAGS), 1.0)),
                          rng.integers(1, 40, (n, MAX_TAGS - 1))], 1)
  v["tags"] = np.cumsum(steps, 1) % len(TAGS)
  v["shipping"] = rng.choice(len(SHIPPING), n, p=[0.5, 0.35, 0.15])
  v["promoted"] = (rng.random(n) < 0.15).astype(np.int64)
  v["subcategory"] = rng.integers(0, SUBCATEGORIES, n)
  # the quality is seen only through noisy numbers
  v["ctr_7d"] = (1 / (1 + np.exp(2.2 - v["quality"] - rng.normal(0, 0.5, n)))).round(4)
  v["rating"] = np.clip(3.8 + 0.6 * v["quality"] + rng.normal(0, 0.6, n), 1, 5).round(1)
  v["num_reviews"] = rng.poisson(v["impressions_7d"] * 0.02 * (1 + v["age_days"] / 100))
  v["color"] = rng.integers(0, len(COLORS), n)
  return v


def _item_teacher(rng, world, v: dict) -> dict:
  """What the teacher knows of each item: its category, popularity, standardised log price,
  latent vector and the sum of its item-only effects."""
  t, n = TEACHER, len(v["category"])
  brand_vec = rng.normal(size=(v["brands"], LATENT))
  brand_bias = rng.normal(0, t["brand"], v["brands"])
  z_price = (v["log_price"] - v["log_price"].mean()) / v["log_price"].std()
  tag_mask = np.arange(MAX_TAGS) < v["n_tags"][:, None]
  effect = (world["category_bias"][v["category"]] + brand_bias[v["brand"]] + v["quality"]
            + t["price"] * z_price + t["discount"] * v["discount"]
            + t["fresh"] * np.exp(-v["age_days"] / 30) + np.take(t["shipping"], v["shipping"])
            + t["promoted"] * v["promoted"]
            + (world["tag_bias"][v["tags"]] * tag_mask).sum(1) / np.sqrt(v["n_tags"]))
  latent = (0.8 * world["category_vec"][v["category"]] + 0.4 * brand_vec[v["brand"]]
            + NOISE * rng.normal(size=(n, LATENT)))
  return dict(category=v["category"], popularity=v["popularity"], z_price=z_price,
              effect=effect, latent=latent)


def _sampler(category: np.ndarray, popularity: np.ndarray):
  """draw(rng, categories) -> one item per entry, by popularity within its category: one
  cumulative sum over the items ordered by category, searched within each category's span."""
  order = np.argsort(category, kind="stable")
  cdf = np.cumsum(popularity[order])
  start = np.searchsorted(category[order], np.arange(len(CATEGORIES)))
  end = np.append(start[1:], len(order))
  low = np.where(start > 0, cdf[np.maximum(start - 1, 0)], 0.0)
  high = cdf[end - 1]

  def draw(rng, categories: np.ndarray) -> np.ndarray:
    x = low[categories] + rng.random(categories.shape) * (high - low)[categories]
    at = np.clip(np.searchsorted(cdf, x, "right"), start[categories], end[categories] - 1)
    return order[at]
  return draw


def _users(rng, world, n: int, item: dict) -> tuple[pa.Table, dict]:
  """The user table and the hidden values the teacher reads."""
  v = _user_values(rng, n, item)
  table = pa.table({
      "user_id": _keys("u", n), "gender": _strings(GENDERS, v["gender"]),
      "age_bucket": _strings(AGE_BUCKETS, v["age"]), "city": _strings(CITIES, v["city"]),
      "device": _strings(DEVICES, v["device"]), "segment": _strings(SEGMENTS, v["segment"]),
      "language": _strings(LANGUAGES, v["language"]), "income": _strings(INCOMES, v["income"]),
      "is_member": _strings(YES_NO, v["member"]),
      **{c: v[c] for c in ("activity", "tenure_days", "avg_spend")},
      "liked_categories": _joined("c", v["liked"], v["n_liked"]),
      "hist_items": _joined("i", v["history"], v["n_history"])})
  return table, _user_teacher(rng, world, v)


def _user_values(rng, n: int, item: dict) -> dict:
  """Value indices and numbers of the user columns, and each user's share of impressions."""
  c = len(CATEGORIES)
  v = dict(gender=rng.choice(len(GENDERS), n, p=[0.48, 0.48, 0.04]),
           age=rng.choice(len(AGE_BUCKETS), n, p=[0.15, 0.3, 0.25, 0.15, 0.1, 0.05]),
           city=rng.choice(len(CITIES), n, p=_zipf(len(CITIES), 1.0)),
           segment=rng.integers(0, len(SEGMENTS), n),
           income=rng.choice(len(INCOMES), n, p=[0.35, 0.45, 0.2]),
           member=(rng.random(n) < 0.3).astype(np.int64),
           weight=_zipf(n, 0.7)[rng.permutation(n)])
  v["activity"] = (5 * np.sqrt(v["weight"] * n) * rng.lognormal(0, 0.3, n)).round(3)
  # liked: the top MAX_LIKED of Gumbel-perturbed log popularities (sampling without
  # replacement, by popularity), the first 1..MAX_LIKED of them kept
  keys = np.log(_zipf(c, 0.8)) + rng.gumbel(size=(n, c))
  v["liked"] = np.argsort(-keys, 1)[:, :MAX_LIKED]
  v["n_liked"] = rng.integers(1, MAX_LIKED + 1, n)
  v["draw"] = _sampler(item["category"], item["popularity"])
  v["n_history"] = np.minimum(rng.poisson(4, n), MAX_HISTORY)
  v["history"] = v["draw"](rng, _pick_liked(rng, v["liked"], v["n_liked"], MAX_HISTORY))
  v["device"] = rng.choice(len(DEVICES), n, p=[0.5, 0.3, 0.15, 0.05])
  v["language"] = rng.choice(len(LANGUAGES), n, p=_zipf(len(LANGUAGES), 1.3))
  v["tenure_days"] = 1 + rng.exponential(500, n).astype(np.int64)
  v["avg_spend"] = np.exp(3 + 0.4 * v["income"] + rng.normal(0, 0.5, n)).round(2)
  return v


def _user_teacher(rng, world, v: dict) -> dict:
  """What the teacher knows of each user: the values its crosses read, the liked categories
  (-1 past `n_liked`), the latent vector and the sum of the user-only effects."""
  n = len(v["gender"])
  liked_mask = np.arange(MAX_LIKED) < v["n_liked"][:, None]
  latent = (0.8 * (world["category_vec"][v["liked"]] * liked_mask[..., None]).sum(1)
            / np.sqrt(v["n_liked"])[:, None] + 0.4 * world["segment_vec"][v["segment"]]
            + NOISE * rng.normal(size=(n, LATENT)))
  log_activity = np.log(v["activity"])
  effect = (TEACHER["activity"] * (log_activity - log_activity.mean()) / log_activity.std()
            + TEACHER["member"] * v["member"] + world["age_bias"][v["age"]])
  return dict(liked=np.where(liked_mask, v["liked"], -1), latent=latent, effect=effect,
              **{k: v[k] for k in ("weight", "n_liked", "city", "gender", "income", "draw")})


def _pick_liked(rng, liked: np.ndarray, n_liked: np.ndarray, k: int) -> np.ndarray:
  """[N, k] categories, each uniform among the first `n_liked` of its row of `liked`."""
  j = (rng.random((len(liked), k)) * n_liked[:, None]).astype(np.int64)
  return np.take_along_axis(liked, j, 1)


def _timestamps(rng, n: int, first_day: int, days: int) -> np.ndarray:
  """Sorted seconds over `days` days from START + first_day, by an evening-heavy hour."""
  day = rng.integers(first_day, first_day + days, n)
  hour = rng.choice(24, n, p=HOURS / HOURS.sum())
  return np.sort(START + day * 86400 + hour * 3600 + rng.integers(0, 3600, n))


def _context(rng, timestamp: np.ndarray) -> dict:
  n = len(timestamp)
  return {"hour": (timestamp // 3600) % 24, "weekday": (timestamp // 86400 + 3) % 7,
          "page": rng.choice(len(PAGES), n, p=[0.35, 0.25, 0.2, 0.15, 0.05]),
          "position": np.minimum(rng.geometric(0.12, n), MAX_POSITION),
          "network": rng.choice(len(NETWORKS), n, p=[0.55, 0.15, 0.25, 0.05])}


def _logits(world, user: dict, item: dict, u, i, context) -> np.ndarray:
  """The teacher's logit of each impression, before the base logit."""
  t, category = TEACHER, item["category"][i]
  dot = np.einsum("nd,nd->n", user["latent"][u], item["latent"][i]) / np.sqrt(LATENT)
  liked = (user["liked"][u] == category[:, None]).any(1)
  return (user["effect"][u] + item["effect"][i] + t["dot"] * dot + t["liked"] * liked
          + world["city_category"][user["city"][u], category]
          + world["gender_category"][user["gender"][u], category]
          + t["income_price"] * (user["income"][u] - 1) * item["z_price"][i]
          + world["hour_page"][context["hour"], context["page"]]
          + t["position"] * np.log(context["position"])
          + np.take(t["network"], context["network"]))


def _base_logit(logits: np.ndarray, rate: float) -> float:
  """b with mean(sigmoid(b + logits)) = rate, by bisection (the mean rises with b)."""
  low, high = -20.0, 20.0
  for _ in range(60):
    mid = (low + high) / 2
    low, high = (mid, high) if np.mean(_sigmoid(mid + logits)) < rate else (low, mid)
  return (low + high) / 2


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """ROC AUC by ranks (the scores are continuous: no ties to average)."""
  ranks = np.empty(len(scores))
  ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
  positives = labels.sum()
  return float((ranks[labels].sum() - positives * (positives + 1) / 2)
               / (positives * (len(labels) - positives)))


def _logs(rng, world, user_table, user, item_table, item, train: int, evals: int):
  """Train then eval impressions as one table (split at row `train`), and their stats."""
  n = train + evals
  u = rng.choice(len(user["weight"]), n, p=user["weight"])
  liked = _pick_liked(rng, user["liked"][u], user["n_liked"][u], 1)[:, 0]
  preferred = user["draw"](rng, liked)
  popular = rng.choice(len(item["popularity"]), n, p=item["popularity"])
  i = np.where(rng.random(n) < 0.5, preferred, popular)
  timestamp = np.concatenate([_timestamps(rng, train, 0, TRAIN_DAYS),
                              _timestamps(rng, evals, TRAIN_DAYS, EVAL_DAYS)])
  context = _context(rng, timestamp)
  logits = _logits(world, user, item, u, i, context)
  p = _sigmoid(_base_logit(logits[:train], CLICK_RATE) + logits)
  click = rng.random(n) < p
  columns = {"event_id": _keys("e", n), "timestamp": timestamp,
             "user_id": user_table["user_id"].take(u), "item_id": item_table["item_id"].take(i),
             "hour": context["hour"], "weekday": context["weekday"],
             "page": _strings(PAGES, context["page"]), "position": context["position"],
             "network": _strings(NETWORKS, context["network"])}
  columns |= {c: user_table[c].take(u) for c in USER_COLUMNS}
  columns |= {c: item_table[c].take(i) for c in ITEM_COLUMNS}
  columns["click"] = click.astype(np.int64)
  stats = {"train_click_rate": float(click[:train].mean()),
           "eval_click_rate": float(click[train:].mean()),
           "teacher_eval_auc": _auc(click[train:], p[train:])}
  return pa.table(columns), stats


def teacher(variant: str):
  """The hidden teacher of a variant, for simulated traffic (benchmarks/loop.py): a function
  (user indices, item indices, context {hour, weekday, page index, position, network index})
  -> click probabilities, rebuilt by replaying `prepare`'s generator, and the entity tables."""
  params = VARIANTS[variant]
  rng = np.random.default_rng(0)
  world = _world(rng)
  item_table, item = _items(rng, world, params["items"])
  user_table, user = _users(rng, world, params["users"], item)
  train, n = params["train_rows"], params["train_rows"] + params["eval_rows"]   # as _logs
  u = rng.choice(len(user["weight"]), n, p=user["weight"])
  preferred = user["draw"](rng, _pick_liked(rng, user["liked"][u], user["n_liked"][u], 1)[:, 0])
  popular = rng.choice(len(item["popularity"]), n, p=item["popularity"])
  i = np.where(rng.random(n) < 0.5, preferred, popular)
  context = _context(rng, np.concatenate([_timestamps(rng, train, 0, TRAIN_DAYS), _timestamps(
      rng, n - train, TRAIN_DAYS, EVAL_DAYS)]))
  base = _base_logit(_logits(world, user, item, u, i, context)[:train], CLICK_RATE)
  return (lambda u, i, context: _sigmoid(base + _logits(world, user, item, u, i, context)),
          {"users": user_table, "items": item_table, "user": user, "item": item})

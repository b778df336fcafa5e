"""MovieLens-1M as leave-one-out next-item rows, written once into a work directory.

The SASRec protocol (Kang & McAuley 2018, after NCF): each user's ratings in time order
(ties keep the file's order); the last item is the user's test item, the earlier ones train.
Every train position t >= 1 is one row (the up to `max_len` items before it, the item at t),
so one row per next-item prediction; the first item has no history and is no row. The eval
row of a user holds the history before the test item, the test item, `num_negatives` items
sampled uniformly without replacement (seeded) from the movies the user never rated, and
every train item of the user (`seen`, for excluding them from full-corpus retrieval).

User columns (gender, age, occupation, zip) and item columns (genres, year) are joined in, so
one file serves the sequential model and the two-tower one. The data may not be
redistributed: the files go to a prepared folder outside the repository
(`paths.prepared("movielens", variant)`), never into it. Writing them is an explicit step,
`recjax prepare --dataset movielens --variant full|smoke` (or `prepare` here); loading a
config only names the paths (`files`). A `meta.json` of the parameters makes a second call
with the same parameters a no-op.
"""

import csv
import gzip
import json
import os
import pathlib
import re

import numpy as np

from recjax.datasets import paths
from recjax.errors import DataError

SOURCE = paths.shared("movielens", "ml-1m")       # at import; `prepare` asks `paths` again
RATINGS = "ratings_users_0001-2999.dat.gz"
COLUMNS = ("user_id", "gender", "age", "occupation", "zip", "history", "movie_id", "genres",
           "year")
EVAL_COLUMNS = COLUMNS + ("negatives", "seen")
ITEM_COLUMNS = ("movie_id", "genres", "year")
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")


# ML-1M's MovieIDs lie in 1..3952 (its README): a vocabulary that needs no file, so that a
# config validates where the data is absent
MOVIE_IDS = tuple(str(i) for i in range(1, 3953))


# The variants that `recjax prepare` writes and the configs read: `smoke`, the first 40 users
VARIANTS = {"full": dict(max_len=50), "smoke": dict(max_len=50, max_users=40)}
NAMES = ("train.csv", "eval.csv", "items.csv")


def work_dir(variant: str) -> pathlib.Path:
  return paths.prepared("movielens", variant)


def files(variant: str) -> dict[str, str]:
  """The paths of a variant's prepared files, which may be absent: a config names them and
  still validates; reading them names the missing file and `prepare_variant`'s command."""
  if variant not in VARIANTS:
    raise ValueError(f"MovieLens variant {variant!r}; valid: {', '.join(VARIANTS)}")
  return {name: str(work_dir(variant) / name) for name in NAMES}


def prepare_variant(variant: str, source: str | os.PathLike | None = None) -> dict[str, str]:
  """Writes the files `files(variant)` names (`recjax prepare --dataset movielens`)."""
  files(variant)                                            # checks the name
  return prepare(work_dir(variant), source=source, **VARIANTS[variant])


def _lines(path: pathlib.Path):
  if not path.exists():
    raise DataError(f"{path}: MovieLens-1M file not found (the shared data root is "
                    f"{paths.root()}; set {paths.DATA_ENV} to the folder that holds movielens/)")
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding="latin-1") as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        yield number, line.rstrip("\n").split("::")


def read_movies(source: pathlib.Path) -> dict[str, tuple[str, str]]:
  """movie id -> (genres "A|B", release year), in file order."""
  movies = {}
  for number, fields in _lines(source / "movies.dat"):
    if len(fields) != 3:
      raise DataError(f"{source / 'movies.dat'}:{number}: expected MovieID::Title::Genres")
    year = re.search(r"\((\d{4})\)\s*$", fields[1])
    movies[fields[0]] = (fields[2], year.group(1) if year else "")
  return movies


def read_users(source: pathlib.Path) -> dict[str, tuple[str, str, str, str]]:
  """user id -> (gender, age, occupation, zip)."""
  users = {}
  for number, fields in _lines(source / "users.dat"):
    if len(fields) != 5:
      raise DataError(f"{source / 'users.dat'}:{number}: expected "
                      "UserID::Gender::Age::Occupation::Zip-code")
    users[fields[0]] = tuple(fields[1:])
  return users


def read_sequences(source: pathlib.Path, max_users: int = 0) -> dict[str, list[str]]:
  """user id -> the movie ids the user rated, in time order (stable on equal times); the
  first `max_users` users of the file when positive."""
  rated = {}
  path = source / RATINGS
  for number, fields in _lines(path):
    if len(fields) != 4 or not fields[3].isdigit():
      raise DataError(f"{path}:{number}: expected UserID::MovieID::Rating::Timestamp")
    user = fields[0]
    if user not in rated and max_users and len(rated) == max_users:
      break
    rated.setdefault(user, []).append((int(fields[3]), fields[1]))
  return {user: [m for _, m in sorted(pairs, key=lambda p: p[0])] for user, pairs in rated.items()}


def _write(path: pathlib.Path, columns, rows) -> None:
  tmp = path.with_suffix(".tmp")
  with open(tmp, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(rows)
  tmp.rename(path)


def prepare(out: str | os.PathLike | None = None, *, source: str | os.PathLike | None = None,
            max_len: int = 50, num_negatives: int = 100, seed: int = 0, max_users: int = 0,
            max_per_user: int = 0) -> dict[str, str]:
  """Writes train.csv, eval.csv and items.csv (the corpus: every movie of movies.dat) into
  `out`; returns their paths. `max_users` and `max_per_user` (the first ratings in time)
  shrink the data for smoke runs and tests."""
  source = pathlib.Path(source) if source else paths.shared("movielens", "ml-1m")
  out = pathlib.Path(out) if out else work_dir("full")
  params = {"source": str(source), "max_len": max_len, "num_negatives": num_negatives,
            "seed": seed, "max_users": max_users, "max_per_user": max_per_user, "version": 2}
  written = {name: str(out / name) for name in NAMES}
  meta = out / "meta.json"
  if meta.exists() and json.loads(meta.read_text()) == params:
    return written
  out.mkdir(parents=True, exist_ok=True)
  movies, users = read_movies(source), read_users(source)
  sequences = read_sequences(source, max_users)
  corpus = np.array(list(movies))
  rng = np.random.default_rng(seed)
  train, evals = [], []
  for user, items in sequences.items():
    if max_per_user:
      items = items[:max_per_user]
    if user not in users:
      raise DataError(f"{source / RATINGS}: user {user} is not in users.dat")
    for item in items:
      if item not in movies:
        raise DataError(f"{source / RATINGS}: user {user} rated movie {item}, which is not in "
                        "movies.dat")
    if len(items) < 3:          # at least one train row and a test item
      continue
    profile = users[user]
    for t in range(1, len(items) - 1):
      train.append((user, *profile, "|".join(items[max(0, t - max_len):t]), items[t],
                    *movies[items[t]]))
    target = items[-1]
    unrated = corpus[~np.isin(corpus, items)]
    negatives = rng.choice(unrated, num_negatives, replace=False)
    evals.append((user, *profile, "|".join(items[-1 - max_len:-1]), target, *movies[target],
                  "|".join(negatives), "|".join(items[:-1])))
  _write(out / "train.csv", COLUMNS, train)
  _write(out / "eval.csv", EVAL_COLUMNS, evals)
  _write(out / "items.csv", ITEM_COLUMNS, [(m, *movies[m]) for m in movies])
  meta.write_text(json.dumps(params))
  return written

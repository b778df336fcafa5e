"""The ids each table has been trained on, kept per workdir for daily incremental training.

A model warm-started from yesterday's workdir has good rows only for the ids it has seen;
how many ids of today's data are new (per table) says how much of today's traffic meets
freshly initialised rows. Every training run writes `<workdir>/seen_ids.npz`: one sorted
unique int32 array per table ("group/table"), the ids its training rows hold (padding, weight
0, excluded) united with the seen ids of the run it started from, so a chain of days keeps
the whole history.
"""

import pathlib

import numpy as np

FILE = "seen_ids.npz"


def of_split(experiment, arrays: dict) -> dict[str, np.ndarray]:
  """{"group/table": sorted unique ids} over a transformed split's id features."""
  plans = experiment.embedding_plan.groups
  seen = {}
  for plan in plans:
    for j, (feature, table) in enumerate(zip(plan.features, plan.tables)):
      ids = arrays["ids"][feature][arrays["weights"][feature] != 0]
      seen.setdefault(f"{plan.owner(j)}/{table}", []).append(np.unique(ids))
  return {key: np.unique(np.concatenate(parts)).astype(np.int32) for key, parts in seen.items()}


def load(workdir) -> dict[str, np.ndarray]:
  """The seen ids a workdir's run wrote; empty when it wrote none."""
  path = pathlib.Path(workdir) / FILE
  if not path.exists():
    return {}
  with np.load(path) as data:
    return {key: data[key] for key in data.files}


def save(workdir, seen: dict[str, np.ndarray]) -> None:
  path = pathlib.Path(workdir) / FILE
  temporary = path.with_suffix(".tmp.npz")
  np.savez_compressed(temporary, **seen)
  temporary.replace(path)


def union(a: dict, b: dict) -> dict[str, np.ndarray]:
  return {key: np.union1d(a.get(key, np.zeros(0, np.int32)), b.get(key, np.zeros(0, np.int32)))
          .astype(np.int32) for key in a.keys() | b.keys()}


def new_ids(current: dict, before: dict) -> dict[str, int]:
  """Per table, how many distinct ids of `current` are not in `before`."""
  return {key: int(np.setdiff1d(ids, before.get(key, np.zeros(0, np.int32)),
                                assume_unique=True).size)
          for key, ids in sorted(current.items())}

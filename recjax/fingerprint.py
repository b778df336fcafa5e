"""What a checkpoint's state means, recorded with it and checked when it is read back.

Two shapes can match while the meaning differs: a vocabulary reordered, a numeric feature's
mean moved, a hash size kept but the hashed column changed. A state trained under one config
and resumed, evaluated or exported under another is a silent mix of two experiments. So each
checkpoint records its config's `fingerprint` (every field of the features, groups, model and
tasks, flattened to dotted keys) and `checksums` of its arrays (CRC32 of each array's bytes,
computed on the host at save). A restore compares both and names what differs:
`features.race.vocabulary changed`, or the arrays whose bytes do not match (a damaged file).
"""

import dataclasses
import zlib

import jax
import numpy as np

SECTIONS = ("features", "groups", "model", "tasks")
_MODULE_FIELDS = {"parent", "name"}      # a Flax module's place in a tree, not its config


def _plain(value):
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    skip = _MODULE_FIELDS if hasattr(value, "apply") else set()
    return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
            if f.name not in skip}
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, (np.generic,)):
    return value.item()
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def _flatten(prefix: str, value, out: dict) -> None:
  if isinstance(value, dict):
    for k, v in value.items():
      _flatten(f"{prefix}.{k}", v, out)
  else:
    out[prefix] = value


def of(experiment) -> dict:
  """{dotted key: JSON value} of the sections that give the state its meaning; named
  entries (features, groups, tasks) keyed by their names."""
  out = {}
  for section in SECTIONS:
    value = getattr(experiment, section)
    if isinstance(value, (tuple, list)):
      value = {getattr(v, "name", str(i)): _plain(v) for i, v in enumerate(value)}
    else:
      value = {"class": type(value).__name__, **_plain(value)}
    _flatten(section, value, out)
  return out


def changes(saved: dict, current: dict) -> list[str]:
  """What differs, as `key changed` / `key added` / `key removed`, sorted."""
  out = [f"{k} changed" for k in saved.keys() & current.keys() if saved[k] != current[k]]
  out += [f"{k} added" for k in current.keys() - saved.keys()]
  out += [f"{k} removed" for k in saved.keys() - current.keys()]
  return sorted(out)


def checksums(state) -> dict[str, int]:
  """CRC32 of each array of `state` that this process holds whole (a table sharded over
  processes is checked by Orbax's own per-shard files only)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      continue
    if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    array = np.ascontiguousarray(np.asarray(jax.device_get(leaf))).reshape(-1)
    out[jax.tree_util.keystr(path)] = zlib.crc32(array.view(np.uint8))
  return out


def damaged(saved: dict, state) -> list[str]:
  """The arrays of `state` whose checksum differs from the one saved."""
  now = checksums(state)
  return sorted(k for k, v in saved.items() if k in now and now[k] != v)

"""Experiment configs: load `configs/<exp>.py`, apply `--config.a.b=v` overrides, validate.

A config file defines `get_config(arg=None)` returning a locked `ml_collections.ConfigDict`.
This module is the one place where a ConfigDict becomes the frozen dataclasses that the
rest of recjax receives; a misspelt key or a value of the wrong type fails here, naming the
key and the nearest valid keys, before any data is read or any checkpoint is written.
"""

import ast
import dataclasses
import difflib
import importlib
import importlib.util
import pathlib
import traceback
import types
import typing
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import ml_collections

from recjax.embedding import sparse_optim
from recjax.embedding import tables as embedding_tables
from recjax.errors import ConfigError
from recjax.export.spec import (  # noqa: F401 (re-exported)
    EntitySpec, ExportSpec, ReplaySpec, ServingSpec)
from recjax.features import spec as features_lib
from recjax.input.spec import DataSpec, LabelSpec    # noqa: F401 (re-exported)
from recjax.models import MODELS
from recjax.models import checks as model_checks
from recjax.tasks import spec as tasks_lib
from recjax.train import optim


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  batch_size: int = 256
  epochs: int = 1
  steps: int = 0                    # 0: epochs x batches per epoch
  eval_batch_size: int = 4096
  seed: int = 0
  log_every: int = 100
  checkpoint_every: int = 500
  keep_checkpoints: int = 2
  progress_bar: bool = True
  eval_every: int = 0               # steps between evaluations; 0: only at the end
  early_stop_metric: str = "auc"    # an evaluation metric (`<task>/<metric>` with several
                                    # tasks): auc, gauc, accuracy, hr@k, ... up; log_loss,
                                    # rmse, mae down
  patience: int = 0                 # evaluations without improvement that stop; 0: never
  min_delta: float = 0.0            # the least change that counts as an improvement
  init_from: str = ""               # warm start from this workdir's last checkpoint
  init_optimizer: bool = False      # with init_from: also its optimizer state (dense, sparse)

  def __post_init__(self):
    tasks_lib.larger_is_better(self.early_stop_metric)    # raises on an unknown metric
    for name in ("batch_size", "epochs", "eval_batch_size", "log_every", "checkpoint_every",
                 "keep_checkpoints"):
      if getattr(self, name) < 1:
        raise ConfigError(f"train.{name}: {getattr(self, name)} is not 1 or more")
    for name in ("steps", "eval_every", "patience"):
      if getattr(self, name) < 0:
        raise ConfigError(f"train.{name}: {getattr(self, name)} is negative")
    if self.min_delta < 0:
      raise ConfigError(f"train.min_delta: {self.min_delta} is negative")


def load(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` by calling its `get_config(arg)`. Loading writes
  nothing: the file is compiled here, not imported, so no __pycache__ appears beside it."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_file():
    raise ConfigError(f"config file not found: {path}")
  module_spec = importlib.util.spec_from_file_location(f"recjax_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  try:
    exec(compile(file.read_bytes(), str(file), "exec"), module.__dict__)
  except SyntaxError as e:
    raise ConfigError(f"{path}:{e.lineno}: {e.msg}") from None
  except Exception as e:       # noqa: BLE001 - the config file's own code failed: say where
    raise ConfigError(f"{path}:{_line_in(e, file)}: {type(e).__name__}: {e}") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} defines no get_config(arg)")
  try:
    config = module.get_config(arg or None)
  except Exception as e:       # noqa: BLE001 - an unknown :variant, or the file's own bug
    raise ConfigError(f"{path}:{_line_in(e, file)}: get_config({arg or None!r}): "
                      f"{type(e).__name__}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict")
  config.lock()
  return config


def _line_in(error: BaseException, file: pathlib.Path) -> int | str:
  """The line of `file` where `error` was raised (its deepest frame in that file)."""
  lines = [f.lineno for f in traceback.extract_tb(error.__traceback__)
           if pathlib.Path(f.filename) == file]
  return lines[-1] if lines else "?"


def _nearest(key: str, valid) -> str:
  valid = sorted(valid)
  close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
  hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
  return f"{hint}valid keys: {', '.join(valid)}"


def _schema(config: ml_collections.ConfigDict, keys: list[str]):
  """The dataclass that validates the section at `keys`, if any (for keys a file left out)."""
  section = _BY_NAME.get(keys[0]) if keys else None
  return section.schema(config, tuple(keys[1:])) if section else None


def _schema_keys(cls) -> set[str]:
  if cls is None:
    return set()
  internal = ("parent", "name") if issubclass(cls, nn.Module) else ()
  return {f.name for f in dataclasses.fields(cls) if f.init and f.name not in internal}


def override(config: ml_collections.ConfigDict, assignment: str) -> None:
  """Applies one `a.b.c=value` override; the value is a Python literal or a bare string.

  A key may be one the file left at its default (e.g. `train.steps`): any field of the
  section's dataclass is accepted, and validated with the rest in `experiment`.
  """
  path, sep, text = assignment.partition("=")
  if not sep:
    raise ConfigError(f"--config.{assignment}: expected --config.KEY=VALUE")
  keys = path.split(".")
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  node = config
  for depth, key in enumerate(keys):
    where = ".".join(keys[: depth + 1])
    if not isinstance(node, ml_collections.ConfigDict):
      raise ConfigError(f"--config.{where}: {'.'.join(keys[:depth])} is not a section")
    last = depth == len(keys) - 1
    if key not in node:
      allowed = _schema_keys(_schema(config, keys[:depth])) | (
          set(_BY_NAME) if depth == 0 else set()) | set(node.keys())
      if key not in allowed:
        raise ConfigError(f"--config.{where}: no such key; {_nearest(key, allowed)}")
      with node.unlocked():
        node[key] = value if last else ml_collections.ConfigDict()
      if last:
        return
    if not last:
      node = node[key]
  old = node[keys[-1]]
  if isinstance(old, tuple) and isinstance(value, (list, str)):
    value = tuple(value) if isinstance(value, list) else tuple(v for v in value.split(",") if v)
  try:
    with node.unlocked():
      node[keys[-1]] = value
  except TypeError:
    raise ConfigError(
        f"--config.{path}={text}: expected {type(old).__name__} (like {old!r})") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
  """Checks `value` against a dataclass field's type hint, converting only losslessly."""
  origin = typing.get_origin(hint)
  if hint is Any:
    return value
  if origin in (typing.Union, types.UnionType):
    for option in typing.get_args(hint):
      try:
        return _coerce(value, option, key)
      except ConfigError:
        pass
    raise ConfigError(f"{key}: {value!r} does not fit {hint}")
  if origin is tuple:
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f"{key}: expected a tuple, got {value!r}")
    (item,) = typing.get_args(hint)[:1]
    return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
  if hint is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if hint is type(None) and value is None:
    return None
  if isinstance(hint, type) and isinstance(value, hint) and not (
      hint is int and isinstance(value, bool)):
    return value
  raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def build(cls, values, key: str, **fixed):
  """Builds frozen dataclass `cls` from a mapping; unknown keys and bad types name the key."""
  if isinstance(values, ml_collections.ConfigDict):
    values = values.to_dict()
  values = dict(values or {})
  hints = typing.get_type_hints(cls)
  names = _schema_keys(cls) - set(fixed)     # a Flax module's parent and name are not config
  fields = {f.name: f for f in dataclasses.fields(cls) if f.name in names}
  for name in values:
    if name not in fields:
      raise ConfigError(f"{key}.{name}: no such key; {_nearest(name, fields)}")
  kwargs = dict(fixed)
  for name, field in fields.items():
    if name in values:
      kwargs[name] = _coerce(values[name], hints[name], f"{key}.{name}")
    elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
      raise ConfigError(f"{key}.{name}: required key is missing")
  try:
    return cls(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigError(f"{key}: {e}") from None


def model_class(name):
  """The Flax module class that `model.name` names: a key of `models.MODELS`, or
  "package.module:Class" for a model defined outside recjax (imported here; it needs a
  `task` field naming its output, or a `tasks` field naming several, like the built-in
  models)."""
  if isinstance(name, str) and name in MODELS:
    return MODELS[name]
  if not isinstance(name, str) or ":" not in name:
    raise ConfigError(f"model.name: {name!r} is not a model; {_nearest(str(name), MODELS)}, "
                      "or package.module:Class")
  module_name, _, attr = name.partition(":")
  try:
    module = importlib.import_module(module_name)
  except ImportError as e:
    raise ConfigError(f"model.name: cannot import {module_name!r} for {name!r}: {e}") from None
  cls = getattr(module, attr, None)
  if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
    raise ConfigError(f"model.name: {module_name} has no Flax module class {attr!r}")
  if not {"task", "tasks"} & {f.name for f in dataclasses.fields(cls)}:
    raise ConfigError(f"model.name: {name} has no `task` or `tasks` field (its outputs)")
  return cls


def _model_schema(config, rest):
  if rest:
    return None
  try:
    return model_class(config.get("model", {}).get("name"))
  except ConfigError:
    return None


def _feature_schema(config, rest):
  declared = config.get("features", {})
  if len(rest) == 1 and rest[0] in declared:
    return features_lib.KINDS.get(declared[rest[0]].get("kind"))
  return None


def _features(config, done) -> dict:
  return {"features": tuple(features_lib.build_feature(name, dict(spec), f"features.{name}", build)
                            for name, spec in config.features.items())}


def _groups(config, done) -> dict:
  groups = tuple(build(features_lib.Group, spec, f"groups.{name}", name=name)
                 for name, spec in config.groups.items())
  features_lib.check_groups(done["features"], groups)
  return {"groups": groups, "embedding_plan": embedding_tables.plan(done["features"], groups)}


def _model(config, done) -> dict:
  """The model's own config, then its field checks (`check(groups)`, see
  `recjax.models.checks`): a bad field is a config error, not a traceback at init."""
  values = dict(config.model)
  name = values.pop("name", None)
  model = build(model_class(name), values, "model")
  model_checks.sizes(model)
  if hasattr(model, "check"):             # raises ConfigError naming model.<field>
    model.check({g.name: g for g in done["groups"]})
  return {"model_name": name, "model": model}


def _with_tasks(config, done) -> dict:
  return {}                            # `label` is the tasks section's shorthand: see _tasks


def _tasks(config, done) -> dict:
  """The tasks section, or the one binary task of `label` named by the model's `task`."""
  model = done["model"]
  if "tasks" in config:
    if "label" in config:
      raise ConfigError("config.label: give either label (one task) or a tasks section")
    if not config.tasks:
      raise ConfigError("config.tasks: no task given")
    return {"label": None, "tasks": tuple(build(tasks_lib.TaskSpec, spec, f"tasks.{name}",
                                                name=name)
                                          for name, spec in config.tasks.items())}
  if "label" not in config:
    raise ConfigError("config.label: required section is missing (or give a tasks section)")
  label = build(LabelSpec, config.label, "label")
  if not isinstance(getattr(model, "task", None), str):
    raise ConfigError(f"config.tasks: model {type(model).__name__} has several outputs; "
                      "name its tasks in a tasks section")
  return {"label": label,
          "tasks": (tasks_lib.TaskSpec(model.task, label.column, label.positive),)}


def _train(config, done) -> dict:
  train = build(TrainSpec, config.get("train"), "train")
  prefix, _, _ = train.early_stop_metric.rpartition("/")
  names = [t.name for t in done["tasks"]]
  if (prefix or len(names) > 1) and prefix not in names:
    raise ConfigError(f"train.early_stop_metric: {train.early_stop_metric!r} names no task; "
                      + (f"use <task>/<metric> with a task of {', '.join(names)}"
                         if len(names) > 1 else "give the metric alone"))
  return {"train": train}


def _export(config, done) -> dict:
  spec = build(ExportSpec, config.get("export"), "export")
  return {"export": dataclasses.replace(spec, model_name=spec.model_name or done["config_name"])}


def _serving_schema(config, rest):
  return {(): ServingSpec, ("user",): EntitySpec, ("item",): EntitySpec,
          ("replay",): ReplaySpec}.get(tuple(rest))


def _serving(config, done) -> dict:
  """The serving section; its entities' columns must be raw columns the features read, each
  column in at most one entity."""
  values = config.serving.to_dict() if config.get("serving") else {}
  entities = {name: build(EntitySpec, values.pop(name), f"serving.{name}")
              for name in ("user", "item") if values.get(name) is not None}
  replay = values.pop("replay", None)
  if replay is not None:
    entities["replay"] = build(ReplaySpec, replay, "serving.replay")
  serving = build(ServingSpec, values, "serving", **entities)
  read = {c for f in done["features"] for c in f.columns}
  if serving.replay is not None and isinstance(serving.replay.min_present, dict):
    for column in serving.replay.min_present:
      if column not in read:
        raise ConfigError(f"serving.replay.min_present: {column!r} is read by no feature; "
                          f"{_nearest(str(column), read)}")
  owner = {}
  for name, entity in serving.entities().items():
    for column in entity.columns:
      if column not in read:
        raise ConfigError(f"serving.{name}.columns: {column!r} is read by no feature; "
                          f"{_nearest(column, read)}")
      if column in owner:
        raise ConfigError(f"serving.{name}.columns: {column!r} is also in serving.{owner[column]}")
      owner[column] = name
  defaults = serving.defaults or {}
  if not isinstance(defaults, dict):
    raise ConfigError(f"serving.defaults: expected {{column: value}}, got {defaults!r}")
  for column in defaults:
    if column not in read:
      raise ConfigError(f"serving.defaults: {column!r} is read by no feature; "
                        f"{_nearest(str(column), read)}")
  if not serving.namespace:
    serving = dataclasses.replace(serving, namespace=done["export"].model_name)
  return {"serving": serving}


def _optimizers(config, done) -> dict:
  optimizer = dict(config.get("optimizer") or {})
  unknown = set(optimizer) - {"dense", "sparse"}
  if unknown:
    name = sorted(unknown)[0]
    raise ConfigError(f"optimizer.{name}: no such key; {_nearest(name, ('dense', 'sparse'))}")
  return {"dense_optimizer": build(optim.DenseOptimizer, optimizer.get("dense"),
                                   "optimizer.dense"),
          "sparse_optimizer": build(sparse_optim.SparseOptimizer, optimizer.get("sparse"),
                                    "optimizer.sparse")}


@dataclasses.dataclass(frozen=True)
class Section:
  """A top-level config section. `spec` validates its keys (and lists them in override
  errors): a dataclass, {subsection: dataclass}, or a function (config, rest of the key
  path) -> dataclass where the schema depends on values (a feature's kind, `model.name`).
  `parse(config, done)` gives the section's Experiment `fields` (default {name: spec}) from
  those above it in `SECTIONS`; None builds one `spec`. `entries`: keys are names, each a
  `spec` (tasks, groups)."""
  name: str
  spec: Any
  parse: Callable[[ml_collections.ConfigDict, dict], dict] | None = None
  fields: dict[str, Any] | None = None
  entries: bool = False
  required: bool = False

  def schema(self, config, rest: tuple[str, ...]):
    if isinstance(self.spec, dict):
      return self.spec.get(rest[0]) if len(rest) == 1 else None
    if not isinstance(self.spec, type):
      return self.spec(config, rest)
    return self.spec if len(rest) == int(self.entries) else None

  def outputs(self) -> dict[str, Any]:
    return {self.name: self.spec} if self.fields is None else self.fields

  def values(self, config, done) -> dict:
    if self.parse is None:
      return {self.name: build(self.spec, config.get(self.name), self.name)}
    return self.parse(config, done)


# The config schema, in parse order (a section's parse reads the fields of those above it).
# A new section (serving, stream) is one entry here plus its spec dataclass.
SECTIONS = (
    Section("data", DataSpec, required=True),
    Section("features", _feature_schema, _features, required=True,
            fields={"features": tuple[features_lib.Feature, ...]}),
    Section("groups", features_lib.Group, _groups, entries=True, required=True,
            fields={"groups": tuple[features_lib.Group, ...],
                    "embedding_plan": embedding_tables.EmbeddingPlan}),
    Section("model", _model_schema, _model, required=True,
            fields={"model_name": str, "model": Any}),     # the model's own frozen config
    Section("label", LabelSpec, _with_tasks, fields={}),   # the one-task shorthand of tasks
    Section("tasks", tasks_lib.TaskSpec, _tasks, entries=True,
            fields={"label": LabelSpec | None, "tasks": tuple[tasks_lib.TaskSpec, ...]}),
    Section("train", TrainSpec, _train),
    Section("optimizer", {"dense": optim.DenseOptimizer, "sparse": sparse_optim.SparseOptimizer},
            _optimizers, fields={"dense_optimizer": optim.DenseOptimizer,
                                 "sparse_optimizer": sparse_optim.SparseOptimizer}),
    Section("export", ExportSpec, _export),
    Section("serving", _serving_schema, _serving, fields={"serving": ServingSpec}),
)
_BY_NAME = {section.name: section for section in SECTIONS}

# What the rest of recjax receives: one frozen field per output of the table above.
Experiment = dataclasses.make_dataclass(
    "Experiment", [(name, hint) for section in SECTIONS for name, hint in section.outputs().items()],
    frozen=True)
Experiment.__module__ = __name__                 # pickles by name, like a class statement
Experiment.__doc__ = "A validated experiment: the fields of `SECTIONS`, in their order."


def experiment(config: ml_collections.ConfigDict, config_name: str = "model") -> Experiment:
  """Validates a whole experiment config into an `Experiment`; `config_name` (the config
  file's name without .py) is the default `export.model_name`."""
  for name in config.keys():
    if name not in _BY_NAME:
      raise ConfigError(f"config.{name}: no such section; {_nearest(name, _BY_NAME)}")
  for section in SECTIONS:
    if section.required and section.name not in config:
      raise ConfigError(f"config.{section.name}: required section is missing")
  done = {"config_name": config_name}
  for section in SECTIONS:
    done |= section.values(config, done)
  del done["config_name"]
  return Experiment(**done)

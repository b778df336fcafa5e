"""Config files, overrides and validation: every mistake names its key and the valid ones."""

import dataclasses
import os
import pathlib
import tempfile

import pytest

from recjax import config as config_lib
from recjax.datasets import paths
from recjax.features import spec as features
from recjax.errors import ConfigError
from tests.conftest import ADULT_CONFIG, ROOT


def _experiment(*overrides, spec=ADULT_CONFIG):
  config = config_lib.load(spec)
  for item in overrides:
    config_lib.override(config, item)
  return config_lib.experiment(config)


_NOT_WATCHED = {".git", ".venv", "__pycache__", ".pytest_cache"}


def _tree(root: pathlib.Path) -> dict:
  """{path: (size, mtime)} of the files under `root`. Python's import caches (__pycache__ of
  recjax's own modules, written by any first import) and the VCS and venv are left out."""
  found = {}
  for folder, dirs, names in os.walk(root):
    dirs[:] = [d for d in dirs if d not in _NOT_WATCHED]
    for name in names:
      stat = os.stat(os.path.join(folder, name))
      found[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns)
  return found


@pytest.mark.parametrize("data", ["shared", "empty"])
def test_every_config_validates_in_full_and_smoke_mode_and_writes_nothing(
    data, tmp_path, monkeypatch):
  """`empty`: RECJAX_DATA names an empty folder, as on a user's clone with no ../shared:
  every config must still load (the data is read, and missed, only by a run)."""
  tmp = tmp_path / "tmp"                     # the temp dir, where prepared files used to go
  tmp.mkdir()
  monkeypatch.setenv("TMPDIR", str(tmp))
  monkeypatch.setattr(tempfile, "tempdir", None)
  monkeypatch.delenv(paths.PREPARED_ENV, raising=False)
  if data == "empty":
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "data"))
  assert paths.prepared_root().is_relative_to(tmp)
  watched = (ROOT, paths.root(), tmp)
  before = [_tree(root) for root in watched]
  files = sorted((ROOT / "configs").glob("*.py"))
  assert files
  for file in files:
    full, smoke = _experiment(spec=str(file)), _experiment(spec=f"{file}:smoke")
    assert full.model_name and smoke.train.steps and smoke.train.steps <= 100
  for root, old in zip(watched, before):
    new = _tree(root)
    assert new == old, (f"loading the configs wrote under {root}: "
                        f"{sorted(set(new.items()) ^ set(old.items()))[:5]}")


def test_a_bad_model_field_is_a_config_error_naming_the_key():
  spec = f"{ROOT / 'configs' / 'movielens_sasrec.py'}:smoke"         # history dim 50
  with pytest.raises(ConfigError, match=r"model.num_heads: 3 heads do not split the 50 dims "
                                        r"of group 'history' \(groups.history.dim\)"):
    _experiment("model.num_heads=3", spec=spec)
  assert _experiment("model.num_heads=5", spec=spec).model.num_heads == 5
  with pytest.raises(ConfigError, match="model.structure: 'tower' is not one of stacked, "
                                        "parallel"):
    _experiment("model.name=dcnv2", "model.structure=tower")
  with pytest.raises(ConfigError, match="model.levels: 0 is less than 1"):
    _experiment("model.levels=0", spec=f"{ROOT / 'configs' / 'census_multitask.py'}:ple,smoke")


def test_the_sections_table_is_the_schema():
  """One entry per section: the valid top-level keys, the override hints and the
  Experiment's fields all come from `SECTIONS`."""
  names = [s.name for s in config_lib.SECTIONS]
  assert names == ["data", "features", "groups", "model", "label", "tasks", "train",
                   "optimizer", "export", "serving"]
  fields = [f.name for f in dataclasses.fields(config_lib.Experiment)]
  assert fields == [n for s in config_lib.SECTIONS for n in s.outputs()]
  with pytest.raises(ConfigError, match="config.servng: no such section; did you mean "
                     "'serving'"):
    config = config_lib.load(f"{ADULT_CONFIG}:smoke")
    with config.unlocked():
      config.servng = {}
    config_lib.experiment(config)
  with pytest.raises(ConfigError, match="--config.optimizer.dense.lr: no such key; "):
    _experiment("optimizer.dense.lr=1")


def _serving(**serving):
  config = config_lib.load(f"{ADULT_CONFIG}:smoke")
  with config.unlocked():
    config.serving = serving
  return config_lib.experiment(config, "adult_wide_deep")


def test_the_serving_section_names_its_entities_columns_and_defaults():
  experiment = _serving(user=dict(key="uid", columns=("age", "gender")),
                        item=dict(key="occupation", columns=("occupation", "education")),
                        defaults=dict(age=38.0))
  assert experiment.serving.user == config_lib.EntitySpec("uid", ("age", "gender"))
  assert experiment.serving.namespace == experiment.export.model_name == "adult_wide_deep"
  assert set(experiment.serving.entities()) == {"user", "item"}
  with pytest.raises(ConfigError, match="serving.user.columns: 'agee' is read by no feature; "
                     "did you mean 'age'"):
    _serving(user=dict(key="uid", columns=("agee",)))
  with pytest.raises(ConfigError, match="serving.item.columns: 'age' is also in serving.user"):
    _serving(user=dict(key="uid", columns=("age",)), item=dict(key="i", columns=("age",)))
  with pytest.raises(ConfigError, match="serving.user.kee: no such key; did you mean 'key'"):
    _serving(user=dict(kee="uid"))
  with pytest.raises(ConfigError, match="serving.defaults: 'nope' is read by no feature"):
    _serving(defaults=dict(nope=1))
  with pytest.raises(ConfigError, match="serving.max_candidates: 0 is too small"):
    _serving(max_candidates=0)
  with pytest.raises(ConfigError, match="export.model_name: 'a/b' is not a name"):
    _experiment("export.model_name=a/b")
  assert _experiment("serving.cache_items=5").serving.cache_items == 5   # an override


def test_adult_config_builds_frozen_specs():
  experiment = _experiment()
  assert experiment.model_name == "wide_deep"
  assert experiment.model.hidden == (128, 64)
  assert experiment.label.positive == (">50K", ">50K.")
  by_name = {f.name: f for f in experiment.features}
  assert isinstance(by_name["gender"], features.IdFeature)
  assert by_name["gender"].num_ids == 3                       # 2 words + 1 OOV bucket
  assert by_name["age_bucket"].column == "age" and by_name["age_bucket"].num_ids == 11
  assert isinstance(by_name["fnlwgt"], features.NumericFeature) and by_name["fnlwgt"].log1p
  assert [g.name for g in experiment.groups] == ["deep", "wide"]
  with pytest.raises(Exception):
    experiment.train.batch_size = 1                            # frozen


def test_overrides_set_values_including_keys_the_file_left_at_default():
  experiment = _experiment("train.steps=7", "model.hidden=(32,16)", "optimizer.dense.name=sgd",
                           "optimizer.sparse.learning_rate=0.5", "data.delimiter=;",
                           "features.education.hash_bucket_size=99")
  assert experiment.train.steps == 7
  assert experiment.model.hidden == (32, 16)
  assert experiment.dense_optimizer.name == "sgd"
  assert experiment.sparse_optimizer.learning_rate == 0.5
  assert experiment.data.delimiter == ";"
  assert {f.name: f for f in experiment.features}["education"].num_ids == 99


@pytest.mark.parametrize("override, message", [
    ("trian.steps=5", "--config.trian: no such key; did you mean 'train'?"),
    ("train.setps=5", "--config.train.setps: no such key; did you mean 'steps'?"),
    ("model.hiden=(8,)", "--config.model.hiden: no such key; did you mean 'hidden'?"),
    ("optimizer.sparse.lerning_rate=1", "did you mean 'learning_rate'?"),
    ("features.gender.vocabulary_=('a',)", "did you mean 'vocabulary'?"),
    ("train.steps=many", "train.steps: expected int, got 'many'"),
    ("train.batch_size=1.5", "--config.train.batch_size=1.5: expected int (like 256)"),
    ("train.steps", "expected --config.KEY=VALUE"),
])
def test_misspelt_keys_and_wrong_types_name_the_key(override, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
    _experiment(override)


def test_invalid_values_are_reported_at_validation():
  with pytest.raises(ConfigError, match="model.name: 'widedeep' is not a model; did you mean 'wide_deep'"):
    _experiment("model.name=widedeep")
  with pytest.raises(ConfigError, match="optimizer.sparse: name 'adam2' is not one of"):
    _experiment("optimizer.sparse.name=adam2")
  with pytest.raises(ConfigError, match="features.gender: set exactly one of"):
    _experiment("features.gender.hash_bucket_size=10")
  with pytest.raises(ConfigError, match="model.hidden\\[1\\]: expected int"):
    _experiment("model.hidden=(8,'x')")


def test_a_typo_inside_the_config_file_names_the_key(tmp_path):
  text = pathlib.Path(ADULT_CONFIG).read_text().replace(
      'config.model = dict(name="wide_deep", hidden=(128, 64))',
      'config.model = dict(name="wide_deep", hiden=(128, 64))')
  file = tmp_path / "typo.py"
  file.write_text(text.replace("pathlib.Path(__file__).resolve().parent.parent",
                               f"pathlib.Path({str(ROOT)!r})"))
  with pytest.raises(ConfigError, match="model.hiden: no such key; did you mean 'hidden'"):
    _experiment(spec=str(file))


def test_groups_must_name_declared_id_features():
  with pytest.raises(ConfigError, match="groups.wide.features: 'age' is numeric"):
    _experiment("groups.wide.features=('age',)")
  with pytest.raises(ConfigError, match="'agee' is not a declared feature"):
    _experiment("groups.wide.features=('agee',)")


def test_missing_config_file_and_bad_arg():
  with pytest.raises(ConfigError, match="config file not found: nowhere.py"):
    config_lib.load("nowhere.py")
  with pytest.raises(ConfigError, match="unknown config arg 'smok'"):
    config_lib.load(f"{ADULT_CONFIG}:smok")

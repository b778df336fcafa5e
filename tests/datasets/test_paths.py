"""recjax.datasets.paths: one rule for the shared data root and for prepared files."""

import pathlib

from recjax.datasets import movielens, paths
from tests.conftest import ROOT


def test_the_data_root_is_recjax_data_else_shared_data_beside_the_checkout(tmp_path):
  assert paths.root({}) == ROOT.parent / "shared" / "data"
  assert paths.root({"RECJAX_DATA": str(tmp_path)}) == tmp_path
  assert paths.shared("movielens", "ml-1m", environ={"RECJAX_DATA": "/d"}) == pathlib.Path(
      "/d/movielens/ml-1m")


def test_an_absent_prepared_file_is_named_with_the_command_that_writes_it(tmp_path):
  environ = {"RECJAX_PREPARED": str(tmp_path)}
  folder = paths.prepared("movielens", "smoke", environ)
  assert folder == tmp_path / "movielens" / "smoke"
  train = str(folder / "train.csv")
  assert paths.missing_prepared([train], environ) == (
      f"{train}: prepared file not found; write it with "
      "`recjax prepare --dataset movielens --variant smoke`")
  folder.mkdir(parents=True)
  (folder / "train.csv").write_text("x\n")
  assert paths.missing_prepared([train], environ) is None
  # files outside the prepared folder are the reader's to report
  assert paths.missing_prepared(["/nonexistent/adult.csv"], environ) is None


def test_movielens_files_name_the_prepared_folder_and_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setenv("RECJAX_PREPARED", str(tmp_path))
  assert movielens.files("smoke") == {
      name: str(tmp_path / "movielens" / "smoke" / name) for name in movielens.NAMES}
  assert not any(tmp_path.iterdir())

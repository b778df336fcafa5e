"""Replacing a SavedModel in place swaps the directories in one step: a reader polling the
path never finds it missing, and nothing but the old model is removed."""

import threading

import tensorflow as tf

from recjax.export import saved_model


class _Constant(tf.Module):
  def __init__(self, value: float):
    super().__init__()
    self.value = tf.Variable(value)
    self.serve = tf.function(lambda x: {"y": x * self.value},
                             input_signature=[tf.TensorSpec([None], tf.float32)])


def test_a_model_replaced_in_place_is_never_absent(tmp_path):
  target = tmp_path / "base" / "7"
  saved_model.save(_Constant(1.0), target)
  (tmp_path / "base" / "README").write_text("kept")
  missing, stop = [], threading.Event()

  def watch():
    while not stop.is_set():
      if not (target / "saved_model.pb").exists():
        missing.append(1)

  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    for value in (2.0, 3.0, 4.0):
      saved_model.save(_Constant(value), target)
  finally:
    stop.set()
    watcher.join()
  assert not missing
  served = tf.saved_model.load(str(target)).signatures["serving_default"]
  assert served(x=tf.constant([2.0]))["y"].numpy().tolist() == [8.0]
  assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["7", "README"]


def test_exchange_swaps_two_directories_in_one_step(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "f").write_text("a")
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "f").write_text("b")
  assert saved_model._exchange(tmp_path / "a", tmp_path / "b")      # Linux renameat2
  assert (tmp_path / "a" / "f").read_text() == "b" and (tmp_path / "b" / "f").read_text() == "a"

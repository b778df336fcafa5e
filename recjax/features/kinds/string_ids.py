"""Strings -> ids by hashing or by a vocabulary with out-of-vocabulary buckets.

Shared by the kinds that turn strings into ids (id, tag, sequence, lookup). Both paths run
the same TensorFlow ops on whole arrays (the numpy path eagerly): hashing with
`to_hash_bucket_fast` (FarmHash), a vocabulary as a `StaticHashTable` with out-of-vocabulary
values hashed into `num_oov_buckets`. So the ids are the same by construction.

A `vocabulary_file` (UTF-8, one value per line) is read once, when the config is validated:
the words become part of the experiment, so the SavedModel embeds them and serving never
depends on the file.
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf


def read_vocabulary(path: str) -> tuple[str, ...]:
  """One value per line ("\\n" or "\\r\\n" endings; a last line without one counts)."""
  try:
    with open(path, encoding="utf-8", newline="") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"vocabulary_file {path!r} cannot be read: {e}") from None
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  words = tuple(line[:-1] if line.endswith("\r") else line for line in lines)
  seen = {}
  for number, word in enumerate(words, 1):
    if word in seen:
      raise ValueError(f"vocabulary_file {path}:{number} repeats {word[:80]!r} "
                       f"(line {seen[word]})")
    seen[word] = number
  if not words:
    raise ValueError(f"vocabulary_file {path!r} is empty")
  return words


def resolve(feature) -> None:
  """Validates a feature's hash / vocabulary options, reading its `vocabulary_file` into
  `vocabulary` (call from `__post_init__` of a frozen dataclass)."""
  if feature.vocabulary_file:
    if feature.vocabulary:
      raise ValueError("set vocabulary or vocabulary_file, not both")
    object.__setattr__(feature, "vocabulary", read_vocabulary(feature.vocabulary_file))
  if feature.hash_bucket_size < 0 or feature.num_oov_buckets < 1:
    raise ValueError("hash_bucket_size must be positive and num_oov_buckets at least 1")
  if not feature.hash_bucket_size and not feature.vocabulary:
    raise ValueError("hash_bucket_size is 0 and there is no vocabulary: set hash_bucket_size "
                     "to 1 or more, or give a vocabulary (or vocabulary_file)")
  if feature.hash_bucket_size and feature.vocabulary:
    raise ValueError("set exactly one of hash_bucket_size and vocabulary (or vocabulary_file)")
  if feature.num_oov_buckets < 1:
    raise ValueError("hash_bucket_size must be positive and num_oov_buckets at least 1")
  if len(set(feature.vocabulary)) != len(feature.vocabulary):
    raise ValueError("vocabulary holds duplicates")


@dataclasses.dataclass(frozen=True)
class StringIds:
  """The mapping itself; `of(feature)` takes it from a feature's fields."""
  hash_bucket_size: int = 0
  vocabulary: tuple[str, ...] = ()
  num_oov_buckets: int = 1

  @classmethod
  def of(cls, feature) -> "StringIds":
    return cls(feature.hash_bucket_size, tuple(feature.vocabulary), feature.num_oov_buckets)

  @property
  def num_ids(self) -> int:
    return self.hash_bucket_size or len(self.vocabulary) + self.num_oov_buckets

  @functools.cached_property
  def _eager_table(self) -> tf.lookup.StaticHashTable | None:
    return self.tf_table()

  def __getstate__(self):
    # The cached TF table is a resource of this process; a pickled copy (e.g. for an input
    # worker process) builds its own.
    return {k: v for k, v in self.__dict__.items() if k != "_eager_table"}

  def ids(self, values) -> np.ndarray:
    """numpy path: an array of str or bytes objects (or a string tensor) -> int32 ids. The
    very ops of `tf_ids`, run eagerly on the whole array (the vocabulary in a TF hash table
    built once): a Python dict over the values would be 10x slower for long lists."""
    return self.tf_ids(values, self._eager_table).numpy()

  def tf_table(self) -> tf.lookup.StaticHashTable | None:
    """The vocabulary as a TF table (None when hashing); built once, tracked by the export."""
    if not self.vocabulary:
      return None
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.vocabulary, tf.string),
            tf.range(len(self.vocabulary), dtype=tf.int64)),
        default_value=-1)

  def tf_ids(self, values: tf.Tensor, table=None) -> tf.Tensor:
    """TF twin of `ids` (`table` from `tf_table`)."""
    if self.hash_bucket_size:
      return tf.cast(tf.strings.to_hash_bucket_fast(values, self.hash_bucket_size), tf.int32)
    values = tf.convert_to_tensor(values, tf.string)
    found = table.lookup(values)
    oov = len(self.vocabulary) + tf.strings.to_hash_bucket_fast(values, self.num_oov_buckets)
    return tf.cast(tf.where(found < 0, oov, found), tf.int32)

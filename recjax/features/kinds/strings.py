"""Splitting "a|b:0.5" lists and parsing numbers, with TensorFlow's string ops in both paths.

The numpy path (training) calls these very ops eagerly on whole columns and the SavedModel
calls them in its graph, so a list is split and a number parsed the same way offline and
online by construction. Python's `str.split` and `float` disagree with TF on corner cases
("1_0", "0x10", float32 rounding of decimal text, what counts as whitespace), so they are not
used on data. Padding and truncation are plain index arithmetic, written once per path.
"""

import re

import numpy as np
import tensorflow as tf


def split_list(column, separator: str) -> tf.RaggedTensor:
  """[N] strings -> [N, None] tokens. The empty string is the empty list (a missing value);
  otherwise every separator counts, so "a||b" holds an empty token."""
  column = tf.convert_to_tensor(column, tf.string)
  tokens = tf.strings.split(column, separator)
  present = tf.not_equal(column, "")
  keep = tf.repeat(present, tokens.row_lengths())
  return tf.RaggedTensor.from_row_lengths(
      tf.boolean_mask(tokens.flat_values, keep),
      tf.where(present, tokens.row_lengths(), tf.zeros_like(tokens.row_lengths())))


def split_pair(tokens, separator: str) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Splits each token at its last `separator`: "a:b:0.5" -> ("a:b", "0.5", True); a token
  without one comes back as (token, "", False)."""
  sep = re.escape(separator)
  tokens = tf.convert_to_tensor(tokens, tf.string)
  paired = tf.strings.regex_full_match(tokens, f"(?s).*{sep}.*")
  keys = tf.strings.regex_replace(tokens, f"(?s)^(.*){sep}.*$", r"\1")
  values = tf.where(paired, tf.strings.regex_replace(tokens, f"(?s)^.*{sep}", ""), "")
  return keys, values, paired


def np_split_list(column: np.ndarray, separator: str) -> tuple[tf.Tensor, np.ndarray]:
  """`split_list` run eagerly: (flat tokens, row_splits as int64 numpy). The tokens stay a
  tensor: the ops that follow are TF's too, and a numpy array of bytes objects would cost
  more than the split itself."""
  tokens = split_list(column, separator)
  return tokens.flat_values, tokens.row_splits.numpy()


def np_split_pair(tokens: tf.Tensor, separator: str) -> tuple[tf.Tensor, tf.Tensor, np.ndarray]:
  keys, values, paired = split_pair(tokens, separator)
  return keys, values, paired.numpy()


def as_bytes(column: np.ndarray) -> np.ndarray:
  """A column of str (or bytes) objects as the UTF-8 bytes TF sees."""
  return tf.convert_to_tensor(column, tf.string).numpy()


def np_to_number(strings, dtype) -> tuple[np.ndarray, np.ndarray]:
  """TF's `to_number` on a whole array -> (values, bad): `bad` marks the elements that are not
  numbers (value 0 there). Found by bisection, so only a block that fails pays for it."""
  try:
    values = tf.strings.to_number(strings, dtype).numpy()
    return values, np.zeros(len(values), bool)
  except tf.errors.InvalidArgumentError:
    pass
  values = np.zeros(len(strings), dtype.as_numpy_dtype)
  bad = np.zeros(len(strings), bool)

  def parse(lo, hi):                    # [lo, hi) holds a string that does not parse
    if hi - lo == 1:
      bad[lo] = True
      return
    for a, b in ((lo, (lo + hi) // 2), ((lo + hi) // 2, hi)):
      try:
        values[a:b] = tf.strings.to_number(strings[a:b], dtype).numpy()
      except tf.errors.InvalidArgumentError:
        parse(a, b)

  parse(0, len(strings))
  return values, bad


def np_pad(flat: np.ndarray, splits: np.ndarray, max_len: int, keep: str, fill) -> np.ndarray:
  """Rows of a flat array (row_splits `splits`) -> [N, max_len]: the first or the `keep="last"`
  max_len elements of each row, in their order, then `fill`."""
  lengths = np.diff(splits)
  take = np.minimum(lengths, max_len)
  start = splits[:-1] + (lengths - take if keep == "last" else 0)
  position = np.arange(max_len)
  index = np.where(position < take[:, None], start[:, None] + position, len(flat))
  return np.concatenate([flat, np.full(1, fill, flat.dtype)])[index]


def tf_pad(rows: tf.RaggedTensor, max_len: int, keep: str, fill) -> tf.Tensor:
  """TF twin of `np_pad` on a ragged [N, None] tensor."""
  rows = rows[:, -max_len:] if keep == "last" else rows[:, :max_len]
  return rows.to_tensor(fill, shape=[None, max_len])


def tf_check(ok: tf.Tensor, message: str, data: tf.Tensor):
  """An assertion that stops serving on a bad request, showing up to 3 offending values."""
  return tf.debugging.Assert(tf.reduce_all(ok), [message, tf.boolean_mask(data, ~ok)[:3]],
                             summarize=3)


def show(value, limit: int = 80) -> str:
  """A raw value as an error message shows it (bytes decoded, long ones cut)."""
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, bytes):
    value = value.decode("utf-8", "replace")
  if isinstance(value, str) and len(value) > limit:
    return repr(value[:limit]) + f"... ({len(value)} characters)"
  return repr(value)

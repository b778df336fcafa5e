"""The data and label sections of a config, as the input pipeline receives them.

Frozen dataclasses whose checks name each bad field (`recjax.config` builds them from the
config file's `data` and `label` sections and raises what they raise as a config error).
"""

import dataclasses
from typing import Any

from recjax.errors import ConfigError
from recjax.input import synthetic


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """Where the rows are and how to read them."""
  train: tuple[str, ...] = ()       # file paths or glob patterns
  eval: tuple[str, ...] = ()
  format: str = "csv"               # csv | parquet | tfrecord | synthetic
  columns: tuple[str, ...] = ()     # CSV column names when the files have no header
  header: bool = True
  delimiter: str = ","              # "\t" for TSV
  quote_char: str = '"'             # "" when fields are never quoted
  strip_whitespace: bool = False    # trim spaces around CSV fields ("a, b" files)
  synthetic: Any = None             # format "synthetic": rows, eval_rows, seed, columns, ...
  bad_rows: str = "error"           # error | skip (counted, up to max_bad_fraction)
  max_bad_fraction: float = 0.001   # with skip: a larger share of bad rows stops the run
  sample_weight: str = ""           # a numeric column weighting each row's loss
  eval_fraction: float = 0.0        # > 0: this seeded random share of the train rows is the
  split_seed: int = 0               #   eval split (data.eval left empty), the rest trains
  workers: int = 1                  # processes that read and transform a split (0, 1: this one)

  def __post_init__(self):
    formats = ("csv", "parquet", "tfrecord", "synthetic")
    if self.format not in formats:
      raise ConfigError(f"data.format: {self.format!r} is not one of {', '.join(formats)}")
    if self.bad_rows not in ("error", "skip"):
      raise ConfigError(f"data.bad_rows: {self.bad_rows!r} is not one of error, skip")
    if not 0 <= self.max_bad_fraction <= 1:
      raise ConfigError(f"data.max_bad_fraction: {self.max_bad_fraction} is not in [0, 1]")
    if not 0 <= self.eval_fraction < 1:
      raise ConfigError(f"data.eval_fraction: {self.eval_fraction} is not in [0, 1)")
    if self.eval_fraction and self.eval:
      raise ConfigError("data.eval_fraction: set either data.eval or data.eval_fraction "
                        "(a share of the train rows)")
    if self.workers < 0:
      raise ConfigError(f"data.workers: {self.workers} is not 0 or more")
    if len(self.quote_char) > 1:
      raise ConfigError(f"data.quote_char: {self.quote_char!r} is not one character or empty")
    if self.format != "synthetic":
      if self.synthetic is not None:
        raise ConfigError("data.synthetic: set only with data.format = 'synthetic'")
      return
    schema = (self.synthetic if isinstance(self.synthetic, synthetic.Schema)
              else synthetic.schema(self.synthetic))
    object.__setattr__(self, "synthetic", schema)
    # The splits of a synthetic source are named like files, so errors and summaries
    # name them as they name files.
    if not self.train:
      object.__setattr__(self, "train", ("synthetic:train",))
    if not self.eval and schema.eval_rows:
      object.__setattr__(self, "eval", ("synthetic:eval",))
    for key in ("train", "eval"):
      for name in getattr(self, key):
        if name not in ("synthetic:train", "synthetic:eval"):
          raise ConfigError(f"data.{key}: {name!r} is not synthetic:train or synthetic:eval "
                            "(the splits of a synthetic source)")


@dataclasses.dataclass(frozen=True)
class LabelSpec:
  """The label column; string labels are 1 when in `positive`, numeric ones are used as is."""
  column: str
  positive: tuple[str, ...] = ()

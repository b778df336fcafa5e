"""The errors recjax raises for bad input: each message names the key, file or line at fault.

`main.py` prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class RecjaxError(Exception):
  """Bad input from the user: a config, a data file, a workdir."""


class ConfigError(RecjaxError):
  """A config key that does not exist, or a value of the wrong type or range."""


class DataError(RecjaxError):
  """A data file that is missing or holds a row that cannot be read."""

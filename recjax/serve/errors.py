"""What the feature store raises, so the server catches one type per decision.

`StoreUnavailable`: the store refused, dropped or did not answer within its timeout. A server
serves that request's entities with defaults (and counts it); the next request tries again.
`LayoutMismatch`: the store's current version holds other columns than this config's, so its
values cannot be read; it is a deployment fault, not a slow store, and defaults would hide it.
Both are `StoreError`s (a `RecjaxError`: the CLI prints the message without a traceback).
"""

from recjax.errors import RecjaxError


class StoreError(RecjaxError):
  """The feature store cannot do what was asked (no version loaded, an unknown entity)."""


class StoreUnavailable(StoreError):
  """The store did not answer: connection refused or lost, or slower than its timeout."""


class LayoutMismatch(StoreError):
  """The stored version's columns or dtypes differ from those the config expects."""

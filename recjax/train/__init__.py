"""Training: the loop and what it keeps between runs.

`loop` (`train_and_evaluate` and the jitted steps), `bookkeeping` (per-step losses, counts and
timing), `checkpoint` (Orbax), `early_stop`, `seen_ids` (ids each run trained on), `optim`
(dense optimizers by parameter regex), `incremental` (days trained one after another).

Layering: imports `export` and everything below it.
"""

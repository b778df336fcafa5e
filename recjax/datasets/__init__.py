"""Datasets: explicit preparation of public datasets, and where shared data lives.

`paths` (one rule for the data root: `RECJAX_DATA`, by default `shared/data` beside the
checkout; prepared files under `RECJAX_PREPARED`), `movielens` (MovieLens-1M leave-one-out
files), `amazon` (DIN's rows from the Amazon Electronics log sample), `synthetic_ranking`
(a generated world of user and item tables and impression logs with clicks from a hidden
teacher, for ranking and serving). Loading a config never prepares data; `recjax prepare
--dataset NAME` or these modules' `prepare` functions do.

Layering: imports only the bottom layer.
"""

"""Datasets: explicit preparation of public datasets, and where shared data lives.

`paths` (one rule for the data root: `RECJAX_DATA`, by default `shared/data` beside the
checkout), `movielens` (MovieLens leave-one-out files). Loading a config never prepares
data; `recjax prepare` or these functions do.

Layering: imports only the bottom layer.
"""

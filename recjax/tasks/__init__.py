"""Tasks: what a model learns and how it is judged.

`spec` (a task's kind, loss, prediction and metrics), `losses`, `metrics` (exact AUC, GAUC,
ranking metrics), `retrieval` (recall evaluation over an item corpus).

Layering: imports `models` and everything below it.
"""

"""Export: TF SavedModels that serve raw columns, in TF-Serving's layout.

`saved_model` (the whole model, and `save`: any serving module, atomically), `towers` (the
user and item towers of a recall model), `tf_tables` (the TF table variables, lookup and
jax2tf conversion both are built of), `writes` (which exports a run writes, and where).

Layering: imports `tasks` and everything below it; never `train` (train calls export).
"""

"""Export: TF SavedModels that serve raw columns, in TF-Serving's layout.

`spec` (the config's export and serving sections), `saved_model` (the whole model, and
`save`: any serving module, atomically), `ranking` (its `rank` signature: one user, N items),
`towers` (the user and item towers of a recall model), `tf_tables` (the TF table variables,
lookup and jax2tf conversion all are built of, at fixed batch buckets), `writes` (which
exports a run writes, and where: `<model_name>/<version>/`).

Layering: imports `tasks` and everything below it; never `train` (train calls export).
"""

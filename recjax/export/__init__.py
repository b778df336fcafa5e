"""Export: TF SavedModels that serve raw columns, in TF-Serving's layout.

`saved_model` (the whole model), `towers` (the user and item towers of a recall model),
`writes` (which exports a run writes, written atomically).

Layering: imports `tasks` and everything below it; never `train` (train calls export).
"""

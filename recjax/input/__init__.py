"""Input: read the files of a split, check every row, transform columns, serve batches.

`spec` (the config's data and label sections), `readers` (CSV/TSV, Parquet, TFRecord,
`synthetic`), `pieces` (a split cut into work for worker processes), `bad_rows` (the
skip-or-stop policy), `labels` (task labels and loss weights, parsed on the host), `pipeline`
(the Grain datasets the loop reads), `stats` (column statistics for `recjax stats`).

Layering: imports `features` and the bottom layer; never embedding, models, tasks or train.
The task specs it parses labels for arrive as arguments, not as imports.
"""

"""The embedding engine: tables, pooled lookups and sparse updates of touched rows.

`tables` (the plan of tables, lookups and `apply_gradients`), `sharded_tables` (row-sharded
tables over the mesh's model axis: the id exchange), `sparse_optim` (row-wise optimizers on
touched rows), `dedup` (sort-free de-duplication of a step's ids), `hugepages` (2 MiB pages
for table memory).

Layering: imports `input`, `features` and the bottom layer.
"""

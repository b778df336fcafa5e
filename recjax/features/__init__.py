"""Features: each declared once in the config, with a numpy transform and a TF twin.

`spec` builds the feature specs from the `features` section and holds the kinds registry;
`kinds/` has one file per kind (id, identity, numeric, tag, combo, sequence, lookup).

Layering: imports only the bottom layer (`recjax.errors`); everything above reads features.
"""

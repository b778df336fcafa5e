"""The serving package: the feature store and its loader."""

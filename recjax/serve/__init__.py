"""Online serving: the feature store (`store`, filled by `loader`) and the ranking server."""

"""The replay loop: what the ranking service served, logged (`writer`, `rows`), joined with
labels into training data (`join`), watched (`coverage`) and re-scored (`verify`)."""

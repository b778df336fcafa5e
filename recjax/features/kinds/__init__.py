"""The feature kinds of `recjax.features.spec`, one file each, and the string helpers they share.

Every kind is a frozen dataclass with the same small protocol (see `recjax.features.spec`): the raw
columns it reads, whether it yields ids or dense values, a numpy path over whole columns for
the training pipeline and a TF twin for the SavedModel that gives identical results.
"""

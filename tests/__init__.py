"""The tests: tests/<package>/test_<module>.py mirror recjax/<package>/<module>.py."""

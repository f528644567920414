"""Benchmark scripts (issue 8 performance, and others): run by hand, see README.md; only tests import them."""

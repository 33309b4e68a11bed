"""Benchmarks for locshare: ``python -m benchmarks --help``."""

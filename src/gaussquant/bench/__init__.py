"""Benchmarks that are also runnable as ``gaussquant bench NAME``."""

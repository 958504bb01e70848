"""Benchmarks that print a table (and JSON with ``--json``); speed goals live here, not in tests."""

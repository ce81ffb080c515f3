"""Benchmarks: validate against the NumPy reference, then time. Never in tests."""

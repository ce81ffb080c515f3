"""Numbered kernel variants (naive -> the one in kernels/) and their harness, run.py."""

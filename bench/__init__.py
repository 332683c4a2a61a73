"""Benchmarks, run by hand from the repository root: `python bench/<name>.py` or `python -m bench.<name>`."""

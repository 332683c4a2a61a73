"""Benchmarks, run by hand as modules: `python -m bench.<name>` (a script named tokenize.py would shadow the stdlib)."""

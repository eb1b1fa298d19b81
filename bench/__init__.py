"""Benchmarks: ``python -m bench.<name>`` or ``python bench/run.py NAME``; see docs/benchmarks.md."""

"""Benchmarks: each script measures one thing and writes its section of bench/RESULTS.md (python bench/NAME.py)."""

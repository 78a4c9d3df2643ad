"""asv suite of attnbench (``benchmark_dir`` in asv.conf.json); see benchmarks.py and docs/asv.md.

asv imports every module of this package to discover benchmarks: keep each one free of work at import.
"""

"""Benchmark scripts: each prints a table (`python -m ptdistill.bench.<name>`)."""

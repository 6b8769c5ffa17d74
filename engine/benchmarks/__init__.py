"""Benchmark scripts (not timed tests); results are written under engine/benchmarks/results/."""

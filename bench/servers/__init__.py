"""The servers compared by the benchmark, each runnable as ``python -m bench.servers.<name>``."""

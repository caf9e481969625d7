"""Benchmarks: fastmath's own code paths measured side by side, results in bench/results/, table in docs/."""

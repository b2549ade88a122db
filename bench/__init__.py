"""Benchmark and fault-injection soak of the relay (dev only; see docs/README-bench.md)."""

"""Benchmark and fault-injection soak of the relay (dev only; see docs/performance.md)."""

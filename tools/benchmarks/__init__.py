"""Benchmarks: speed, input pipeline, replicas, accuracy against the paper."""

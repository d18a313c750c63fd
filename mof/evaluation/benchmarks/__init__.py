"""Benchmarks in their published file layouts."""

"""Evaluation: benchmarks in their published layouts, batched greedy answering, scoring and reports."""

"""Evaluate a model: `python evaluate.py benchmark=mmvp benchmark.root=DIR checkpoint=PATH`; `-m checkpoint=A,B`."""
from mof.cli import evaluate

if __name__ == "__main__":
    evaluate()

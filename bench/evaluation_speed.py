"""MMVP-format evaluation: questions/s at batch size 1 against batched greedy decoding (same answers).

    python bench/evaluation_speed.py [--batch 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import median, record, table

from mof import MofForConditionalGeneration, tiny_config
from mof.data import MofImageProcessor, load_tokenizer
from mof.evaluation.generation import answer
from mof.evaluation.loading import Loaded
from mof.evaluation.benchmarks.synthetic import Synthetic


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    questions = Synthetic({"synthetic": {"pairs_per_pattern": 4}}, tempfile.mkdtemp()).items()
    torch.manual_seed(0)
    config = tiny_config(vocab_size=544)
    loaded = Loaded(MofForConditionalGeneration(config).eval(), load_tokenizer(), MofImageProcessor.from_model_config(config),
                    "vicuna_v1")
    times, outputs = {1: [], a.batch: []}, {}
    for _ in range(a.rounds):
        for bs in (1, a.batch):
            t0 = time.perf_counter()
            outputs[bs] = answer(loaded, questions, "vicuna_v1", batch_size=bs, max_new_tokens=8)
            times[bs].append(len(questions) / (time.perf_counter() - t0))
    same = [p["response"] for p in outputs[1]] == [p["response"] for p in outputs[a.batch]]
    one, many = median(times[1]), median(times[a.batch])
    body = table(["batch size", "median questions/s", "speed-up"],
                 [[1, f"{one:.1f}", "1.00"], [a.batch, f"{many:.1f}", f"{many / one:.2f}"]])
    record("Evaluation: batch 1 vs batched greedy decoding",
           f"tiny interleaved model (128 visual tokens), {len(questions)} questions, 8 new tokens, {a.rounds} rounds\n\n"
           f"{body}\n\nIdentical answers at both batch sizes: {same}.")


if __name__ == "__main__":
    main()

"""Peak memory and time of the LM head + loss, forward and backward: full logits vs chunked, on CPU.

Each implementation runs in a fresh process (peak resident memory is per process); the increase of the peak
over the process's peak after setup is what the head and the loss add. Times alternate in one process.

    python bench/loss_memory.py [--tokens 8192] [--hidden 1024] [--vocab 32000] [--chunk 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from common import alternate, median, record, table

from mof.model.loss import causal_lm_loss


def setup(a):
    torch.manual_seed(0)
    hidden = torch.randn(1, a.tokens, a.hidden, requires_grad=True)
    weight = (torch.randn(a.vocab, a.hidden) * a.hidden**-0.5).requires_grad_(True)
    labels = torch.randint(0, a.vocab, (1, a.tokens))
    labels[:, : a.tokens // 4] = -100  # an unlabelled prompt
    return hidden, weight, labels


def step(hidden, weight, labels, implementation, chunk):
    if implementation == "full":
        loss = causal_lm_loss(hidden @ weight.T, None, labels)
    else:
        loss = causal_lm_loss(hidden, weight, labels, implementation, chunk)
    loss.backward()
    hidden.grad = weight.grad = None
    return loss.item()


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(a):
    small = argparse.Namespace(tokens=64, hidden=a.hidden, vocab=256)
    step(*setup(small), a.child, 16)  # the kernels' and thread pools' first-use allocations, before measuring
    tensors = setup(a)
    before = peak_mib()
    loss = step(*tensors, a.child, a.chunk)
    print(json.dumps({"added_mib": peak_mib() - before, "loss": loss}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--chunk", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", default=None)
    a = p.parse_args()
    if a.child:
        return child(a)
    args = [f"--tokens={a.tokens}", f"--hidden={a.hidden}", f"--vocab={a.vocab}", f"--chunk={a.chunk}"]
    memory = {impl: json.loads(subprocess.run([sys.executable, __file__, *args, f"--child={impl}"], check=True,
                                              capture_output=True, text=True).stdout.strip().splitlines()[-1])
              for impl in ("full", "chunked")}
    tensors = setup(a)
    times = alternate({impl: (lambda impl=impl: step(*tensors, impl, a.chunk)) for impl in ("full", "chunked")},
                      a.repeats, warmup=1)
    full_mib, full_s = memory["full"]["added_mib"], median(times["full"])
    rows = [[impl, f"{memory[impl]['added_mib']:.0f}", f"{memory[impl]['added_mib'] / full_mib:.2f}",
             f"{median(times[impl]):.2f}", f"{median(times[impl]) / full_s:.2f}", f"{memory[impl]['loss']:.6f}"]
            for impl in ("full", "chunked")]
    logits_mib = a.tokens * a.vocab * 4 / 2**20
    record("LM head + loss without the full logits: peak memory (CPU)",
           f"{a.tokens} positions, hidden {a.hidden}, vocabulary {a.vocab}, fp32, chunks of {a.chunk} positions; "
           f"forward + backward of the head and the loss; the full logits alone are {logits_mib:.0f} MiB\n\n"
           + table(["loss", "peak memory added (MiB)", "ratio", "median s", "time ratio", "loss value"], rows))


if __name__ == "__main__":
    main()

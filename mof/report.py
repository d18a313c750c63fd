"""`python -m mof.report`: tables and the paper's analyses from saved evaluation results.

    python -m mof.report DIR [DIR ...] [--out DIR]                         one table and per-pattern plot
    python -m mof.report correlate --clip DIR ... --mllm DIR ... [--out]   CLIP-vs-MLLM Pearson r + line plot
    python -m mof.report tradeoff SWEEP_DIR [--x mof.alpha] [--out]        a sweep's scores over alpha
"""

import argparse
import sys

from .errors import one_line_errors
from .evaluation.analyses import correlate, tradeoff
from .evaluation.report import main as table


@one_line_errors
def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return None
    if argv[:1] == ["correlate"]:
        p = argparse.ArgumentParser(prog="python -m mof.report correlate", description="Per-pattern CLIP vs MLLM correlation.")
        p.add_argument("--clip", nargs="+", required=True, help="MMVP-VLM result folders of CLIP-like models")
        p.add_argument("--mllm", nargs="+", required=True, help="MMVP result folders of MLLMs")
        p.add_argument("--out", default="report")
        p.add_argument("--mixed-scoring", action="store_true", help="correlate MLLM results scored differently")
        a = p.parse_args(argv[1:])
        return correlate(a.clip, a.mllm, a.out, a.mixed_scoring)
    if argv[:1] == ["tradeoff"]:
        p = argparse.ArgumentParser(prog="python -m mof.report tradeoff", description="A sweep's benchmark scores over a setting.")
        p.add_argument("sweep", help="a multirun folder (its jobs scored benchmarks after training: evaluate_after)")
        p.add_argument("--x", default="mof.alpha", help="the config key swept")
        p.add_argument("--out", default="report")
        p.add_argument("--mixed-scoring", action="store_true", help="tabulate jobs whose benchmarks were scored differently")
        a = p.parse_args(argv[1:])
        return tradeoff(a.sweep, a.out, a.x, a.mixed_scoring)
    return table(argv)


if __name__ == "__main__":
    main()

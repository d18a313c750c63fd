"""The miniature's MLLMs trained on instruction data that, like LLaVA's, rarely asks about the properties web captions
never name: every question of the other patterns, and a `--share` of the question pairs of the `--rare` properties
(the captions of the tiny CLIP never name them either: the experimenter's choice, stated here, not read from its
config). Each fusion x seed trains as the study's runs do (the tiny preset, the shipped frozen encoders, the same
captions), two at a time, and is scored on the synthetic benchmark and, with `--mined`, on a study's mined
benchmark. Prints each pattern's pair accuracy (mean over seeds) beside the tiny CLIP's and the study's CLIP-only
MLLM, and Pearson r against the CLIP.

    python reproduce.py                                     # the study: its CLIP scores and mined benchmark
    python bench/miniature_rare_questions.py --mined outputs/reproduce/benchmark --out outputs/rare_questions
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import ROOT
from mof.data.synthetic import PROPERTY, generate
from mof.evaluation.report import pattern_correlation

SUMMARY = ROOT / "docs" / "miniature" / "summary.json"   # the study's CLIP and CLIP-only MLLM per pattern


def rare_questions(train: Path, rare: set[str], share: float, seed: int) -> list[dict]:
    """The training set's questions, keeping each pair (two consecutive ids, one scene) of a rare property with
    probability `share`."""
    rng, pairs = random.Random(seed), {}
    for q in json.loads((train / "instruct.json").read_text()):
        pairs.setdefault(int(q["id"].split("-")[1]) // 2, []).append(q)
    return [q for qs in pairs.values() if PROPERTY[qs[0]["pattern"]] not in rare or rng.random() < share for q in qs]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/rare_questions")
    p.add_argument("--rare", nargs="+", default=["orientation", "presence", "quantity", "position", "viewpoint"])
    p.add_argument("--share", type=float, default=0.1)
    p.add_argument("--fusions", nargs="+", default=["none", "interleaved"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--mined", help="a study's mined benchmark folder (MMVP layout)")
    p.add_argument("--data-dir", default=str(ROOT / "data_cache"))
    a = p.parse_args()
    out = Path(a.out).resolve()
    train = generate(Path(a.data_dir) / "synthetic" / "train", pairs_per_pattern=150, seed=0, size=64)
    kept = rare_questions(train, set(a.rare), a.share, 0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "instruct.json").write_text(json.dumps(kept))
    images = train / "images"
    sources = (f"data.sources=[{{path:{out / 'instruct.json'},image_root:{images}}},"
               f"{{path:{train / 'captions.json'},image_root:{images}}}]")
    evals = "[mmvp,synthetic]" if a.mined else "[synthetic]"

    def run(fusion: str, seed: int) -> Path:
        d = out / fusion / f"seed{seed}"
        if not (d / "eval_synthetic" / "results.json").exists():
            print(f"training {fusion} seed {seed} (log {d}.log)", flush=True)
            d.parent.mkdir(parents=True, exist_ok=True)
            with open(f"{d}.log", "w") as log:
                subprocess.run([sys.executable, "train.py", f"mof={fusion}", f"seed={seed}", sources,
                                f"evaluate_after={evals}", "synthetic_benchmark.pairs_per_pattern=20", "logger=csv",
                                f"paths.data_dir={a.data_dir}", f"hydra.run.dir={d}",
                                *([f"benchmarks.mmvp.root={Path(a.mined).resolve()}"] if a.mined else [])],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
        return d

    with ThreadPoolExecutor(2) as pool:   # two one-thread runs side by side, as the study
        dirs = {(f, s): pool.submit(run, f, s) for f in a.fusions for s in a.seeds}
    study = json.loads(SUMMARY.read_text())
    clip = study["clip_vlm"]["per_pattern"]
    scores = {}
    for f in a.fusions:
        per_seed = [json.loads((dirs[f, s].result() / "eval_synthetic" / "results.json").read_text()) for s in a.seeds]
        mined = [json.loads((dirs[f, s].result() / "eval_mmvp" / "results.json").read_text())["pair_accuracy"]
                 for s in a.seeds] if a.mined else []
        scores[f] = {"patterns": {q: [r["per_pattern"][q]["pair_accuracy"] for r in per_seed] for q in clip},
                     "synthetic": [r["pair_accuracy"] for r in per_seed], "mined": mined}
    print(f"questions kept: {len(kept)}; rare: {', '.join(a.rare)} at {a.share}; seeds {a.seeds}")
    print("| pattern | tiny CLIP | CLIP-only MLLM, every question (study) | " +
          " | ".join(f"{f}, rare questions" for f in a.fusions) + " |")
    print("|---" * (3 + len(a.fusions)) + "|")
    base = study["mllm"]["none"]["synthetic"]["per_pattern"]
    for q in clip:
        cells = [f"{statistics.fmean(v):.0f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.0f}"
                 for v in (scores[f]["patterns"][q] for f in a.fusions)]
        print(f"| {q} | {clip[q]:.0f} | {base[q]['mean']:.0f} | " + " | ".join(cells) + " |")
    for f in a.fusions:
        r, _ = pattern_correlation(clip, {q: statistics.fmean(v) for q, v in scores[f]["patterns"].items()})
        line = f"{f}: synthetic {statistics.fmean(scores[f]['synthetic']):.1f} {scores[f]['synthetic']}, " \
               f"Pearson r with the tiny CLIP {r:.2f}"
        if scores[f]["mined"]:
            line += f", mined benchmark {statistics.fmean(scores[f]['mined']):.1f} {scores[f]['mined']}"
        print(line)
    (out / "summary.json").write_text(json.dumps(scores, indent=1))
    print(f"results: {out / 'summary.json'}")


if __name__ == "__main__":
    main()

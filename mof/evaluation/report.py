"""Reports: a markdown table like the paper's, per-pattern bar plots, and the Pearson correlation of
two systems' per-pattern scores.

    python -m mof.report DIR [DIR ...] [--out DIR] [--names A B ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import statistics
from pathlib import Path

from ..data.patterns import PATTERNS, canonical_pattern
from ..errors import MofError

MIN_PATTERNS = 3  # a correlation over two patterns is always +-1: none is reported below three


class ReportError(MofError, ValueError):
    """A results folder a report cannot read; the message names it."""


def read_results(folder: str | Path) -> dict:
    """A folder's `results.json` (named after the folder unless it names itself)."""
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise ReportError(f"mof.report: no results.json in {folder}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a results file ({type(e).__name__}: {e})") from None
    if not isinstance(results, dict) or not isinstance(results.get("per_pattern") or {}, dict):
        raise ReportError(f"{path}: expected a JSON object as evaluate.py writes it (benchmark, metrics, per_pattern)")
    for key, stats in (results.get("per_pattern") or {}).items():
        score = stats.get("pair_accuracy") if isinstance(stats, dict) else stats
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ReportError(f"{path}: per_pattern.{key}: expected a pair accuracy (a number), got {score!r}")
    results.setdefault("name", Path(folder).name)
    return results


def comparable(all_results: list[dict], mixed_scoring: bool = False) -> list[dict]:
    """`all_results`, refused when two of one benchmark were scored differently (MMVP's `scoring`: mof, lmms_eval,
    paper ask and read differently) unless `mixed_scoring` says to put them side by side anyway."""
    modes = {}
    for r in all_results:
        modes.setdefault(r.get("benchmark"), {}).setdefault(r.get("scoring", "mof"), r.get("name"))
    for benchmark, seen in modes.items():
        if len(seen) > 1 and not mixed_scoring:
            raise ReportError(f"mof.report: {benchmark} results scored differently ("
                              + ", ".join(f"{name}: scoring={mode}" for mode, name in seen.items())
                              + "); their numbers are not comparable (pass --mixed-scoring to show them anyway)")
    return all_results


def _label(results: dict) -> str:
    """What a figure or table calls a system: its given name, else the overrides of the run that made its checkpoint
    (`.hydra/overrides.yaml`, read as plain YAML: `mof=interleaved seed=1`), else that run's folder name."""
    if results.get("name"):
        return results["name"]
    path = Path(str(results.get("checkpoint") or results.get("rescored_from") or "?"))
    run = path.parent if path.name in ("export", "predictions.jsonl") or path.suffix == ".ckpt" else path
    if path.suffix == ".ckpt" and run.name == "checkpoints":
        run = run.parent
    overrides = run_overrides(run)
    return " ".join(overrides) if overrides else run.name


IGNORED_OVERRIDES = ("hydra.", "paths.", "logger", "checkpoint", "benchmark", "evaluate_after", "resume", "overwrite",
                     "trainer.accelerator", "trainer.devices")


@functools.lru_cache(maxsize=None)  # a report labels each result several times (groups, table, plots): read once
def run_overrides(run: Path) -> tuple[str, ...]:
    """The command-line overrides a run was made with that say what it is (not where it wrote or how it logged)."""
    import yaml

    try:
        values = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ()
    if not isinstance(values, list):
        return ()
    return tuple(str(v) for v in values if isinstance(v, str) and not v.lstrip("+~").startswith(IGNORED_OVERRIDES))


def seed_groups(all_results: list[dict]) -> list[tuple[str, list[dict]]]:
    """Results of one benchmark whose labels differ only in `seed=N`, grouped (in first-seen order): the seeds of one
    configuration, shown as a mean with its spread."""
    groups = {}
    for r in all_results:
        key = re.sub(r"\s*\bseed=\d+\b", "", _label(r)).strip() or _label(r)
        groups.setdefault((r.get("benchmark"), key), []).append(r)
    return [(key, members) for (_, key), members in groups.items()]


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson r (numpy's `corrcoef`); nan where it is undefined: fewer than two values, or either side constant
    (where numpy would warn and divide by zero)."""
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or not x.std() or not y.std():
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def pattern_scores(results: dict) -> dict[str, float]:
    """Per-pattern pair accuracy under the patterns' canonical names (`mof.data.patterns`), whatever a results file
    calls them (MMVP-VLM's own results name image folders, with the category beside): the one reader, so that
    every table, plot and correlation pairs the same patterns."""
    out = {}
    for key, stats in (results.get("per_pattern") or {}).items():
        name = canonical_pattern((stats.get("category") if isinstance(stats, dict) else None) or key)
        out[name] = float(stats["pair_accuracy"] if isinstance(stats, dict) else stats)
    return out


def pattern_correlation(a: dict[str, float], b: dict[str, float]) -> tuple[float | None, int]:
    """Pearson r of two systems' per-pattern scores over the patterns both have, paired by name (None under
    `MIN_PATTERNS` common patterns), and how many there are."""
    common = [p for p in PATTERNS if p in a and p in b] + sorted(set(a) & set(b) - set(PATTERNS))
    if len(common) < MIN_PATTERNS:
        return None, len(common)
    r = pearson([a[p] for p in common], [b[p] for p in common])
    return (None if math.isnan(r) else r), len(common)


def metric_names(results: dict) -> list[str]:
    """The metrics a results file reports, its primary first (files written before benchmarks named theirs: MMVP's)."""
    return list(results.get("metric_names") or ["pair_accuracy", "question_accuracy"])


def markdown(all_results: list[dict]) -> str:
    patterns = sorted({p for r in all_results for p in pattern_scores(r)})
    metrics = list(dict.fromkeys(m for r in all_results for m in metric_names(r)))
    head = ["system", "benchmark", *[m.replace("_", " ") for m in metrics], "items", "unparsed"] + patterns
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in all_results:
        ps = pattern_scores(r)
        row = [_label(r), r.get("benchmark", "")]
        row += [f"{r[m]:.1f}" if isinstance(r.get(m), (int, float)) else "-" for m in metrics]
        row += [str(r.get("num_pairs", r.get("num_questions", ""))), str(r.get("unparsed", "-"))]
        row += [f"{ps[p]:.1f}" if p in ps else "-" for p in patterns]
        lines.append("| " + " | ".join(row) + " |")
    for key, members in seed_groups(all_results):
        if len(members) < 2:
            continue
        row = [f"{key} (mean ± std, {len(members)} seeds)", members[0].get("benchmark", "")]
        for m in metrics:
            values = [r[m] for r in members if isinstance(r.get(m), (int, float))]
            row.append(f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else "-")
        row += ["", ""]
        for p in patterns:
            values = [pattern_scores(r)[p] for r in members if p in pattern_scores(r)]
            row.append(f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}" if len(values) > 1 else "-")
        lines.append("| " + " | ".join(row) + " |")
    text = "\n".join(lines) + "\n"
    if len(all_results) >= 2:
        a, b = all_results[0], all_results[1]
        r, n = pattern_correlation(pattern_scores(a), pattern_scores(b))
        if r is not None:
            text += f"\nPearson correlation of per-pattern scores, {_label(a)} vs {_label(b)}: {r:.3f} ({n} patterns)\n"
    return text


def plot(all_results: list[dict], path: Path) -> Path | None:
    patterns = sorted({p for r in all_results for p in pattern_scores(r)})
    if not patterns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = seed_groups(all_results)   # the seeds of one configuration: one bar, mean ± std
    k = len(groups)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(patterns) + 2), 4))
    for i, (key, members) in enumerate(groups):
        per = [[pattern_scores(r).get(p, 0.0) for r in members] for p in patterns]
        xs = [j + (i - (k - 1) / 2) * width for j in range(len(patterns))]
        spread = [statistics.stdev(v) for v in per] if len(members) > 1 else None
        ax.bar(xs, [statistics.fmean(v) for v in per], width, yerr=spread, capsize=2,
               label=key if len(members) == 1 else f"{key} ({len(members)} seeds)")
    ax.set_xticks(range(len(patterns)))
    ax.set_xticklabels([p.replace(" and ", " & ") for p in patterns], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("pair accuracy (%)")
    ax.set_ylim(0, 100)
    ax.axhline(25.0, color="gray", linestyle="--", linewidth=0.8, label="chance (25%)")
    ax.legend(fontsize=8)
    if len(all_results) == 1:  # one system: its overall score in the title, and a warning when its answers say nothing
        r = all_results[0]
        primary = metric_names(r)[0]
        score = f": {primary.replace('_', ' ')} {r[primary]:.1f}%" if isinstance(r.get(primary), (int, float)) else ""
        ax.set_title(f"{_label(r)} on {r.get('benchmark', '?')}{score}"
                     + (f"\n({r['degenerate']})" if r.get("degenerate") else ""), fontsize=10)
    else:
        primary = metric_names(all_results[0])[0]
        scores = ", ".join(f"{key} {statistics.fmean(r[primary] for r in members):.1f}"
                           for key, members in groups if all(isinstance(r.get(primary), (int, float)) for r in members))
        ax.set_title(f"per-pattern pair accuracy on {all_results[0].get('benchmark', '?')}"
                     + (f"\n{primary.replace('_', ' ')}: {scores}" if scores else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(all_results: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(markdown(all_results))
    plot(all_results, out_dir / "per_pattern.png")


def print_summary(results: dict) -> None:
    names = metric_names(results)
    text = ", ".join(f"{m.replace('_', ' ')} {results[m]:.1f}%" for m in names if isinstance(results.get(m), (int, float)))
    print(f"{results.get('benchmark')}: {text}; unparsed {results.get('unparsed', 0)}, "
          f"unanswerable {results.get('unanswerable', 0)}")
    if results.get("degenerate"):
        print(f"warning: {results['degenerate']}: the scores say nothing about what the model sees")
    for split, v in sorted((results.get("per_split") or {}).items()):
        print(f"  {split:<45} " + ", ".join(f"{m} {v[m]:.1f}" for m in names if m in v))
    for p, v in sorted((results.get("per_pattern") or {}).items()):
        print(f"  {p:<45} {v['pair_accuracy']:6.1f}% ({v.get('correct_pairs', '?')}/{v.get('pairs', '?')})")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m mof.report", description="Merge result directories into one table "
                                "and plot (see `python -m mof.report --help` for correlate and tradeoff).")
    p.add_argument("dirs", nargs="+", help="directories holding results.json (e.g. the jobs of a multirun)")
    p.add_argument("--out", default="report")
    p.add_argument("--names", nargs="*", help="a display name per directory")
    p.add_argument("--mixed-scoring", action="store_true", help="show results of one benchmark scored differently")
    a = p.parse_args(argv)
    all_results = []
    for i, d in enumerate(a.dirs):
        r = read_results(d)
        if a.names and i < len(a.names):
            r["name"] = a.names[i]
        all_results.append(r)
    comparable(all_results, a.mixed_scoring)
    write_report(all_results, Path(a.out))
    print(markdown(all_results))
    print(f"wrote {a.out}/report.md and {a.out}/per_pattern.png")


if __name__ == "__main__":
    main()

"""The paper's two analyses over saved results: (a) how CLIP's blindness carries into MLLMs (per-pattern MMVP-VLM
scores of CLIP-like models against per-pattern MMVP scores of MLLMs, Pearson r per pair, line plot) and (b) the
A-MoF trade-off (a sweep's benchmark scores over alpha, table and plot)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from omegaconf import OmegaConf

from ..data.patterns import PATTERNS
from .report import MIN_PATTERNS, ReportError, _label, comparable, pattern_correlation, pattern_scores, read_results


def correlate(clip_dirs: list, mllm_dirs: list, out: str | Path, mixed_scoring: bool = False) -> dict:
    """Pearson r of per-pattern scores for every (CLIP-like model, MLLM) pair; `correlation.{md,json,png}`."""
    clips = [read_results(d) for d in clip_dirs]
    mllms = comparable([read_results(d) for d in mllm_dirs], mixed_scoring)
    rows = []
    for c in clips:
        for m in mllms:
            r, n = pattern_correlation(pattern_scores(c), pattern_scores(m))
            rows.append({"clip": _label(c), "mllm": _label(m), "pearson_r": r, "patterns": n})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| CLIP-like model | MLLM | Pearson r | patterns |", "|---|---|---|---|"]
    lines += [f"| {r['clip']} | {r['mllm']} | {_r(r['pearson_r'], r['patterns'])} | {r['patterns']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    (out / "correlation.md").write_text(text)
    (out / "correlation.json").write_text(json.dumps(rows, indent=1))
    _line_plot([(_label(r), pattern_scores(r), "--" if r in clips else "-") for r in clips + mllms], out / "correlation.png")
    print(text)
    return {"pairs": rows}


def _r(r: float | None, patterns: int) -> str:
    return f"{r:.3f}" if r is not None else f"n/a ({patterns} common patterns; r needs {MIN_PATTERNS})"


def _line_plot(series, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patterns = [p for p in PATTERNS if any(p in s for _, s, _ in series)]
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, scores, style in series:
        ax.plot(range(len(patterns)), [scores.get(p, math.nan) for p in patterns], style, marker="o", label=label)
    ax.set_xticks(range(len(patterns)))
    ax.set_xticklabels([p.replace(" and ", " & ") for p in patterns], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("pair accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_jobs(sweep_dir: str | Path) -> list[Path]:
    """The job folders of a Hydra multirun (those holding `.hydra/config.yaml`)."""
    jobs = sorted(p.parent.parent for p in Path(sweep_dir).glob("*/.hydra/config.yaml"))
    if not jobs:
        raise ReportError(f"mof.report tradeoff: no job folders (*/.hydra/config.yaml) in {sweep_dir}")
    return jobs


def swept_value(config_file: Path, key: str):
    """`key`'s value in a job's saved config, never resolved: an interpolation there could read an environment
    variable (a secret) into the report."""
    try:
        node = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in YAML's own ways
        raise ReportError(f"{config_file}: not a readable Hydra config ({type(e).__name__})") from None
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ReportError(f"{config_file}: no key {key!r} (the setting the sweep varied: --x)")
        node = node[part]
    if isinstance(node, str) and "${" in node:
        raise ReportError(f"{config_file}: {key} is an interpolation ({node}); reports never resolve them")
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise ReportError(f"{config_file}: {key}: expected a number, got {node!r}")
    return node


def tradeoff(sweep_dir: str | Path, out: str | Path, x: str = "mof.alpha", mixed_scoring: bool = False) -> dict:
    """Each job's value of `x` and the primary metric of every benchmark it scored after training (its `eval_*/`
    folders), sorted by `x`: the paper's A-MoF table; `tradeoff.{md,json,png}`."""
    rows, read = [], []
    for job in sweep_jobs(sweep_dir):
        value = swept_value(job / ".hydra" / "config.yaml", x)
        scores, source = {}, {}
        for folder in sorted(p.parent for p in job.glob("eval_*/results.json")):
            r = read_results(folder)
            read.append(r)
            metric = r.get("primary_metric", "pair_accuracy")
            column = f"{r.get('benchmark')} {metric.replace('_', ' ')}"
            if column in scores:  # two evaluations of one benchmark: which one the table shows is not ours to pick
                raise ReportError(f"mof.report tradeoff: {job} holds two results of {r.get('benchmark')} "
                                  f"({source[column].name}, {folder.name}); keep one")
            if not isinstance(r.get(metric), (int, float)):
                raise ReportError(f"{folder / 'results.json'}: no number for its primary metric {metric!r}")
            scores[column], source[column] = r[metric], folder
        rows.append({x: value, "job": job.name, **scores})
    comparable(read, mixed_scoring)
    rows.sort(key=lambda r: (r[x] is None, r[x]))
    columns = list(dict.fromkeys(k for r in rows for k in r if k not in (x, "job")))
    lines = ["| " + " | ".join([x, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join([str(r[x]), *(f"{r[c]:.1f}" if c in r else "-" for c in columns)]) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tradeoff.md").write_text(text)
    (out / "tradeoff.json").write_text(json.dumps(rows, indent=1))
    _tradeoff_plot(rows, x, columns, out / "tradeoff.png")
    print(text)
    return {"rows": rows, "columns": columns}


def _tradeoff_plot(rows, x, columns, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r[x] for r in rows]
    for c in columns:
        ax.plot(xs, [r.get(c, math.nan) for r in rows], marker="o", label=c)
    ax.set_xlabel(x)
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

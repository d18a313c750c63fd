"""The miniature's figures: per-pattern scores of the CLIP and the CLIP-only MLLM (the paper's Figure 4), the
additive trade-off over the DINO share, and every fusion side by side; error bars are the std over seeds."""

from __future__ import annotations

from pathlib import Path

from ..data.patterns import PATTERNS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, title: str, path: Path) -> None:
    """What every figure here ends with: the chance line, pair accuracy on y, a title, a legend, the file."""
    ax.axhline(25, color="grey", lw=0.8, ls=":", label="chance (25%)")
    ax.set_ylabel("pair accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_correlation(clip: dict, mllm: dict, r, path: Path) -> None:
    plt = _pyplot()
    names = [p for p in PATTERNS if p in clip and p in mllm]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    x = range(len(names))
    ax.plot(x, [clip[p] for p in names], "o--", label="tiny CLIP (MMVP-VLM style)")
    ax.errorbar(x, [mllm[p]["mean"] for p in names], yerr=[mllm[p]["std"] for p in names], fmt="o-", capsize=3,
                label="CLIP-only MLLM (synthetic MMVP, mean ± std over seeds)")
    ax.set_xticks(list(x), [p.replace(" and ", " &\n").replace(" of ", "\nof ") for p in names], fontsize=7,
                  rotation=30, ha="right")
    ax.set_ylim(-5, 105)
    _finish(plt, fig, ax, f"Does CLIP's blindness carry into the MLLM? Pearson r = {'n/a' if r is None else f'{r:.2f}'}",
            path)


def dino_share(overrides) -> float | None:
    """The DINO share (1 - alpha) of an additive fusion's overrides; 0 for CLIP only; None for other fusions."""
    opts = dict(o.split("=", 1) for o in overrides)
    if opts.get("mof") == "none":
        return 0.0
    if opts.get("mof") == "additive":
        return 1 - float(opts.get("mof.alpha", 0.5))
    return None


def plot_tradeoff(fusions: dict, mllm: dict, path: Path) -> None:
    plt = _pyplot()
    points = sorted((dino_share(o), name) for name, o in fusions.items() if dino_share(o) is not None and name in mllm)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, label, style in (("benchmark", "mined CLIP-blind pairs", "o-"), ("instruction", "CLIP-seen patterns", "s--")):
        pts = [(x, mllm[n][key]) for x, n in points if mllm[n].get(key)]
        ax.errorbar([x for x, _ in pts], [v["mean"] for _, v in pts], yerr=[v["std"] for _, v in pts], fmt=style,
                    capsize=3, label=f"additive: {label}")
    for key, marker in (("benchmark", "*"), ("instruction", "P")):
        for name, o in fusions.items():
            if dino_share(o) is None and name in mllm and mllm[name].get(key):
                v = mllm[name][key]
                ax.errorbar([0.5], [v["mean"]], yerr=[v["std"]], fmt=marker, ms=11, capsize=3,
                            label=f"{name} (not on the alpha axis): {key}")
    ax.set_xlabel("DINO share (1 - alpha)")
    _finish(plt, fig, ax, "Additive MoF trade-off (mean ± std over seeds)", path)


def plot_fusions(mllm: dict, path: Path) -> None:
    plt = _pyplot()
    names = list(mllm)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.4
    for k, (key, label) in enumerate((("benchmark", "mined CLIP-blind pairs"), ("instruction", "CLIP-seen patterns"))):
        vals = [mllm[n][key] or {"mean": 0, "std": 0} for n in names]
        ax.bar([i + (k - 0.5) * width for i in range(len(names))], [v["mean"] for v in vals], width,
               yerr=[v["std"] for v in vals], capsize=3, label=label)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    _finish(plt, fig, ax, "MLLMs on the frozen tiny encoders (mean ± std over seeds)", path)

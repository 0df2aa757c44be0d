"""Report plots as PNG bytes (matplotlib's Agg canvas through ``Figure``: no pyplot, no display).

Labels come from files (attack, category, variant names), so ``$`` is escaped to keep matplotlib's
mathtext from interpreting (or choking on) them.
"""

from __future__ import annotations

import io
from itertools import cycle
from typing import Iterator, Sequence

from matplotlib.figure import Figure

from safealign.report.load import TrainingRun
from safealign.report.results import Metric

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
TRAIN_PANELS = (
    ("loss", (("loss", "loss", "-"),)),
    ("reward margin (chosen − rejected)", (("rewards/margins", "margin", "-"),)),
    ("policy log-probs", (("logps/chosen", "chosen", "-"), ("logps/rejected", "rejected", "--"))),
    ("accuracy", (("rewards/accuracies", "reward acc.", "-"), ("ranking_accuracy", "ranking acc.", ":"))),
)


def _label(text: object) -> str:
    """``text`` shown as itself: ``$`` escaped, and a zero-width space before a leading ``_``, as matplotlib
    leaves labels starting with ``_`` out of the legend."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def _looks(first: str = "") -> Iterator[tuple[str, str]]:
    """``(colour, marker)`` per series, without end: the palette with marker ``first`` ("" for none), then with
    each other marker, so every series is drawn and one past the palette still looks different from the rest."""
    return cycle([(c, m) for m in (first, *(m for m in MARKERS if m != first)) for c in PALETTE])


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)  # layout is already tight: skip a second draw
    return buf.getvalue()


def _series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def training_curves(runs: Sequence[TrainingRun]) -> bytes | None:
    """2×2 panels: loss, margin, chosen/rejected log-probs, accuracies; one colour per variant."""
    if not any(_series(r.metrics, k)[0] for r in runs for _, keys in TRAIN_PANELS for k, _, _ in keys):
        return None
    fig = Figure(figsize=(10, 6.4))
    for ax, (title, keys) in zip(fig.subplots(2, 2).flat, TRAIN_PANELS):
        for (colour, marker), run in zip(_looks(), runs):
            for key, name, style in keys:
                steps, values = _series(run.metrics, key)
                if steps:
                    label = _label(run.name if len(keys) == 1 else f"{run.name}: {name}")
                    ax.plot(steps, values, style, color=colour, marker=marker, markersize=3, label=label,
                            linewidth=1.6)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="#888")
    fig.tight_layout()
    return _png(fig)


def grouped_bars(groups: Sequence[str], series: dict[str, dict[str, Metric]], *, ylabel: str,
                 ylim: tuple[float, float] | None = None, percent: bool = False) -> bytes | None:  # fmt: skip
    """Bars per group, one series per stage, with 95% CI error bars where the metric carries one."""
    if not groups or not series:
        return None
    fig = Figure(figsize=(8.0 if len(groups) * len(series) <= 12 else 10.0, 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    scale = 100.0 if percent else 1.0
    for i, (name, metrics) in enumerate(series.items()):
        xs, ys, lo, hi = [], [], [], []
        for g, group in enumerate(groups):
            m = metrics.get(group)
            if m is None or m.value is None:
                continue
            xs.append(g - 0.4 + width * (i + 0.5))
            ys.append(m.value * scale)
            lo.append(max(0.0, (m.value - m.ci95[0]) * scale) if m.ci95 else 0.0)
            hi.append(max(0.0, (m.ci95[1] - m.value) * scale) if m.ci95 else 0.0)
        ax.bar(xs, ys, width * 0.92, yerr=[lo, hi], capsize=3, color=PALETTE[i % len(PALETTE)],
               label=_label(name), error_kw={"elinewidth": 1, "ecolor": "#333"})  # fmt: skip
    ax.set_xticks(range(len(groups)), [_label(g) for g in groups], fontsize=9, rotation=25 if len(groups) > 8 else 0)
    ax.set_ylabel(_label(ylabel), fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.legend(loc="outside upper center", ncols=min(6, len(series)), fontsize=9, frameon=False)
    return _png(fig)


def entanglement_curves(runs: Sequence[TrainingRun]) -> bytes | None:
    """Gradient cosine between chosen and rejected log-prob gradients, and per-step log-prob changes."""
    runs = [r for r in runs if r.diagnostics]
    if not runs:
        return None
    fig = Figure(figsize=(10, 3.4))
    left, right = fig.subplots(1, 2)
    for (colour, marker), run in zip(_looks("o"), runs):
        steps, cos = _series(run.diagnostics, "cosine")
        left.plot(steps, cos, "-", color=colour, marker=marker, markersize=3, label=_label(run.name))
        for key, style in (("delta_chosen", "-"), ("delta_rejected", "--")):
            steps, values = _series(run.diagnostics, key)
            right.plot(steps, values, style, color=colour, marker=marker, markersize=3,
                       label=_label(f"{run.name}: {key.split('_')[1]}"))
    left.axhline(0, color="#888", linewidth=0.8)
    right.axhline(0, color="#888", linewidth=0.8)
    left.set_title("cos(∇ log π(chosen), ∇ log π(rejected))", fontsize=10)
    right.set_title("log-prob change per probe step", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def asr_at_n_curves(curves: dict[str, Sequence[dict]]) -> bytes | None:
    """ASR@N against the budget N (log axis), one line per ``label → [{"n", "asr"}, ...]`` curve."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.subplots()
    for (colour, marker), (label, points) in zip(_looks("o"), curves.items()):
        ax.plot([p["n"] for p in points], [100.0 * p["asr"] for p in points], "-", color=colour, marker=marker,
                markersize=2.5, linewidth=1.6, label=_label(label))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("attempts per behavior N", fontsize=8)
    ax.set_ylabel("ASR@N (%)", fontsize=8)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7)
    return _png(fig)


def cost_scatter(points: Sequence[tuple[str, float, float, float | None]], *, ylabel: str, xlabel: str) -> bytes | None:
    """ASR (y, %) against over-refusal (x, %) per model, marker area proportional to the cost multiple of
    the bare model (1 when unknown); ``points`` are ``(label, over_refusal, asr, cost_multiple)`` in 0..1. The labels
    name the attack and judge of the ASR and the detector of the over-refusal (the caller's, one for every point)."""
    if not points:
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, (label, x, y, multiple) in enumerate(points):
        size = 60.0 * max(0.25, multiple if multiple is not None else 1.0)
        ax.scatter([x * 100], [y * 100], s=size, color=PALETTE[i % len(PALETTE)], alpha=0.7, edgecolors="#333")
        suffix = f" ({multiple:.1f}×)" if multiple is not None else ""
        ax.annotate(_label(label + suffix), (x * 100, y * 100), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(_label(xlabel), fontsize=9)
    ax.set_ylabel(_label(ylabel), fontsize=9)
    ax.set_xlim(-5, 105)
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.set_title("lower left is better; marker area = cost per answer × bare model", fontsize=9)
    return _png(fig)


def forest(rows: Sequence[tuple[str, float, float, float]], *, xlabel: str) -> bytes | None:
    """Paired differences with their 95% intervals, one horizontal line per ``(label, diff, low, high)``,
    the first row on top, against a dashed zero."""
    if not rows:
        return None
    fig = Figure(figsize=(8.0, 0.9 + 0.32 * len(rows)), layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(rows)))[::-1]
    diffs = [r[1] for r in rows]
    errors = [[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]]
    ax.errorbar(diffs, ys, xerr=errors, fmt="o", color=PALETTE[0], ecolor="#333", elinewidth=1, capsize=3,
                markersize=4)
    ax.axvline(0.0, color="#888", linestyle="--", linewidth=1)
    ax.set_yticks(ys, [_label(r[0]) for r in rows], fontsize=8)
    ax.set_xlabel(_label(xlabel), fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)

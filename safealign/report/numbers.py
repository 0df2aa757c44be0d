"""The console and markdown text of a mean, its interval and a paired difference: one format for every
comparison table (``safealign sweep``, ``safealign compare-online``)."""

from __future__ import annotations

from typing import Any


def value(number: float | None) -> str:
    return "-" if number is None else f"{number:.3f}"


def with_interval(number: float | None, interval: list[float] | None) -> str:
    """``0.250 [0.150,0.367]``; the bare value without an interval, ``-`` without a value."""
    if number is None or interval is None:
        return value(number)
    return f"{number:.3f} [{interval[0]:.3f},{interval[1]:.3f}]"


def difference(compared: dict[str, Any] | None) -> str:
    """A paired difference (``diff`` and ``ci95``, safealign.eval.paired) as ``+0.038 [-0.050,+0.138]``."""
    if not compared:
        return "-"
    if compared.get("ci95") is None:  # one prompt (safealign.eval.paired.paired_difference): no interval
        return f"{compared['diff']:+.3f} (no interval)"
    low, high = compared["ci95"]
    return f"{compared['diff']:+.3f} [{low:+.3f},{high:+.3f}]"


def render(rows: list[list[str]], markdown: bool = False) -> list[str]:
    """Rows (the first is the header) as a markdown table or as aligned console columns. Markdown cells are
    escaped (a setting or variant name may hold ``|`` or a newline); numbers come out as they are."""
    if markdown:
        from safealign.report.markdown import md_escape  # here: the console path needs none of the report

        cells = [[md_escape(c) for c in r] for r in rows]
        out = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
        return out + ["| " + " | ".join(r) + " |" for r in cells[1:]]
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
    return ["".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]


# a sweep table's cells (safealign/pipelines/sweep.py), in the console, markdown and the HTML report alike
def mean_cell(row: dict[str, Any], variant: str, metric: str, text: str) -> str:
    """A mean as ``text``, marked ``(2 seeds)`` when it is over fewer seeds than the variant finished (a metric some
    cells lack: ASR under a judge run on some cells only), so it is not read beside the others as their equal."""
    counts = row.get("seed_counts")  # tables written before it was recorded: unmarked
    n = counts.get(variant, {}).get(metric) if counts else None
    return _marked(text, n, row["seeds_finished"].get(variant))


def diverged_mark(row: dict[str, Any], variant: str | None = None) -> str:
    """`` (1 diverged)``: the row's cells of ``variant`` (None: of every variant) whose training diverged, which no
    mean or difference includes (tables written before they were recorded: none)."""
    diverged = row.get("diverged") or {}
    n = sum(len(seeds) for v, seeds in diverged.items() if variant in (None, v))
    return f" ({n} diverged)" if n else ""


def difference_cell(row: dict[str, Any], compared: dict[str, Any], metric: str) -> str:
    """A paired difference, marked as :func:`mean_cell` when it is over fewer seeds than either of its variants
    finished. Not against the seeds both finished (the pair's own ``seeds``): dpo on seeds 0-2 and e-dpo on 2-4
    give a difference over seed 2 alone beside means over 3 seeds each, and that count is the pair's own too."""
    d = compared["metrics"].get(metric)
    finished = [n for v in (compared["a"], compared["b"]) if (n := row["seeds_finished"].get(v)) is not None]
    text = _marked(difference(d), d.get("seeds") if d else None, max(finished, default=None))
    short = prompts_short(row, compared, metric)
    return f"{text} ({d['n_prompts']} of {short} prompts)" if short else text


def prompts_short(row: dict[str, Any], compared: dict[str, Any], metric: str) -> int | None:
    """The most prompts a mean of the pair is over (a cell's own scored prompts: ``prompt_counts``) where the
    difference is over fewer (those every compared cell scored: its ``n_prompts``), else None. A metric averaged
    over each cell's scored prompts (a judge that left one unscored) otherwise shows a difference of other prompts
    beside its means, unmarked."""
    d, counts = compared["metrics"].get(metric), row.get("prompt_counts")  # tables written before: unmarked
    if not d or not counts or d.get("n_prompts") is None:
        return None
    most = max(counts.get(v, {}).get(metric) or 0 for v in (compared["a"], compared["b"]))
    return most if d["n_prompts"] < most else None


def _marked(text: str, n: int | None, full: int | None) -> str:
    if n is None or full is None or n >= full or text == "-":
        return text
    return f"{text} ({n} seed{'' if n == 1 else 's'})"

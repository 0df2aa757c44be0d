"""The report of a ``safealign sweep`` directory: each grid's table (``tables/<grid>.json``) as tables and, per
metric, a forest plot of every compared pair's paired difference with its hierarchical interval."""

from __future__ import annotations

from typing import Any

from safealign.report import numbers, plots
from safealign.report.document import Para, Plot, Section, Table

NOTE = ("Means over the finished seeds of each cell. Intervals: seeds and prompts crossed, a two-way random-effects "
        "t interval (Satterthwaite df; a bootstrap where seeds scored different prompts); a difference uses the "
        "seeds both of its cells finished, with their count where fewer than either cell finished. "
        "Rates are judged by the refusal judge the sweep's evaluation names (the demo's: refusal substrings), not by "
        "harm.")


def sweep_sections(tables: dict[str, dict[str, Any]], *, with_plots: bool) -> list[Section]:
    sections = []
    for name, table in tables.items():
        try:
            sections.append(_section(name, table, with_plots))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:  # hand-edited or truncated
            sections.append(Section(f"Sweep: {name}", f"sweep-{name}", [
                Para(f"tables/{name}.json is not a sweep table this version can read ({type(exc).__name__}: "
                     f"{exc}); `safealign sweep GRID --table` rewrites it.", "warn")]))
    return sections


def _section(name: str, table: dict[str, Any], with_plots: bool) -> Section:
    rows, variants = table.get("settings", []), table.get("variants", [])
    metrics = list(dict.fromkeys(m for row in rows for means in row["means"].values() for m in means))
    progress = table.get("progress")
    diverged = f", {progress['diverged']} diverged (no figures: `(N diverged)` beside the seeds)" \
        if progress and progress.get("diverged") else ""
    done = f"{progress['finished']}/{progress['cells']} distinct cells finished{diverged}. " if progress else ""
    blocks: list[Any] = [Para(f"Grid {name}: {len(rows)} setting(s) × {len(variants)} variant(s) × seeds "
                              f"{table.get('seeds')}; {done}{NOTE}", "note")]
    means = [("setting", "variant", "seeds", *metrics)]
    for row in rows:
        for variant in variants:
            ci = row["ci95"].get(variant, {})
            means.append((row["name"], variant, f"{row['seeds_finished'].get(variant, 0)}"
                          f"{numbers.diverged_mark(row, variant)}",
                          *(numbers.mean_cell(row, variant, m, numbers.with_interval(row["means"][variant].get(m),
                                                                                   ci.get(m))) for m in metrics)))
    if table.get("base"):
        means.append(("(base model)", "-", "-", *(numbers.value(table["base"].get(m)) for m in metrics)))
    blocks.append(Table(tuple(means[0]), tuple(means[1:]), "Each variant's mean per setting [95% interval]."))
    diffs = [("setting", "difference", *metrics)]
    diffs += [(row["name"], f"{d['a']} − {d['b']}", *(numbers.difference_cell(row, d, m) for m in metrics))
              for row in rows for d in row["differences"]]
    if len(diffs) > 1:
        blocks.append(Table(tuple(diffs[0]), tuple(diffs[1:]), "Paired differences [95% hierarchical interval]."))
    if with_plots:
        for metric in metrics:
            points = [(f"{row['name']}: {d['a']} − {d['b']}" if len(rows) > 1 else f"{d['a']} − {d['b']}",
                       d["metrics"][metric]["diff"], *d["metrics"][metric]["ci95"])
                      for row in rows for d in row["differences"] if d["metrics"].get(metric)]
            png = plots.forest(points, xlabel=f"{metric}: paired difference, 95% hierarchical interval")
            if png:
                blocks.append(Plot(png, f"paired differences of {metric} per compared pair and setting"))
    return Section(f"Sweep: {name}", f"sweep-{name}", blocks)

"""Where does one variant's extra refusal margin land: on prompts the other already refuses, or on those it
answers? (``safealign diagnose margin-split``; issue 20, docs/findings.md.)

Input: the evaluation folders of two variants (e.g. E-DPO and DPO), one per training seed in the same seed
order — a demo stage's ``eval/<stage>`` or a sweep cell's ``eval`` — each holding the held-out refusal margins
(``refusal_margin/margins.json``: per harmful prompt, log π(refusal|x) − log π(base model's answer|x), nats)
and the jailbreak records (the greedy answer to each prompt, judged by the refusal judge). Every prompt×seed
case is put in a group by variant b's greedy outcome (``b refused`` / ``b complied``); per group: the
cases, b's and a's mean margin and the mean gain ``a − b`` with a hierarchical interval (seeds and prompts crossed:
the crossed bootstrap, each seed averaged over the drawn prompts of its group, as the groups' prompts differ
between seeds; the random-effects t interval where they do not, e.g. one seed;
safealign.eval.paired.hierarchical_mean), each a mean over seeds of
the seed's mean over its prompts in the group, so that gain = a's mean − b's mean. ``flips`` counts the cases
whose greedy outcome differs between the variants, each way. A gain much smaller than the gap between the
groups' margins, spread over both groups, moves log-probs without moving what greedy decoding picks. Prompts are
paired by id: an id that names another prompt in the two folders is refused. With ``open_figure`` (``--open``) the
open margins are split instead (``refusal_margin/margins_open.json``: base answers cut at the token limit scored
without an end-of-turn; safealign/pipelines/demo_margin.py).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from safealign.errors import UserError

GROUPS = ("b refused", "b complied")


def read_stage(eval_dir: str | Path, attack: str = "direct", judge: str = "refusal",
               open_figure: bool = False) -> tuple[dict, dict]:
    """(prompt -> margin, prompt -> attack succeeded) of one evaluation folder; unscored prompts left out.
    ``open_figure``: the open margins, not the closed ones."""
    from safealign.eval.records import current_records
    from safealign.eval.summary import behavior_outcomes
    from safealign.pipelines.demo_margin import CLOSED, MARGIN_DIR, OPEN, read_margins

    eval_dir = Path(eval_dir)
    files = OPEN if open_figure else CLOSED
    margins = read_margins(eval_dir, files)
    if margins is None:
        made = ("a sweep cell finished before the open figure existed gets it from `safealign sweep GRID "
                "--score-open-margins`" if open_figure else "made by a version that records the held-out refusal "
                "margin")
        raise UserError(f"{eval_dir}: no {MARGIN_DIR}/{files.margins} (an evaluation folder of the demo or a sweep "
                        f"cell, {made})")
    records = eval_dir / "jailbreak" / "records.jsonl"
    if not records.is_file():
        raise UserError(f"{records}: no jailbreak records")
    outcomes = {p: o for p, o in behavior_outcomes(current_records(records), attack, judge).items() if o is not None}
    if not outcomes:
        raise UserError(f"{records}: no {attack!r} attempt scored by the {judge!r} judge")
    return margins, outcomes


def split_margins(a: list[str | Path], b: list[str | Path], *, attack: str = "direct", resamples: int = 2000,
                  seed: int = 0, open_figure: bool = False) -> dict[str, Any]:
    """The comparison described in the module docstring, as a dict (``open_figure``: of the open margins)."""
    from safealign.checks import at_least
    from safealign.eval.paired import hierarchical_mean
    from safealign.pipelines.eval_difference import check_same_prompts

    at_least("resamples", resamples, 1)
    if not a or len(a) != len(b):
        raise UserError(f"margin-split needs one evaluation folder per seed for both variants, in the same order; "
                        f"got {len(a)} and {len(b)}")
    stages = [(read_stage(x, attack, open_figure=open_figure), read_stage(y, attack, open_figure=open_figure))
              for x, y in zip(a, b)]
    for x, y in zip(a, b):
        check_same_prompts(x, y)  # margins and outcomes are paired by prompt id
    groups: dict[str, dict[int, dict[str, tuple[float, float]]]] = {g: {} for g in GROUPS}
    flips = {"b complied, a refused": 0, "b refused, a complied": 0}
    for s, ((margin_a, out_a), (margin_b, out_b)) in enumerate(stages):
        common = sorted(set(margin_a) & set(margin_b) & set(out_a) & set(out_b))
        if not common:
            raise UserError(f"{a[s]} and {b[s]}: no held-out prompt with a margin and an outcome in both")
        for p in common:
            groups[GROUPS[out_b[p]]].setdefault(s, {})[p] = (margin_a[p], margin_b[p])
            if out_a[p] != out_b[p]:
                flips["b complied, a refused" if out_b[p] else "b refused, a complied"] += 1
    result: dict[str, Any] = {"seeds": len(a), "attack": attack, "open": open_figure, "groups": {}, "flips": flips}
    for group, per_seed in groups.items():
        if not per_seed:
            continue
        gains = {s: {p: ma - mb for p, (ma, mb) in prompts.items()} for s, prompts in per_seed.items()}
        gain = hierarchical_mean(gains, resamples=resamples, seed=seed)
        # means over seeds of each seed's mean, like the gain, so that gain = mean_a − mean_b
        means = [statistics.fmean(statistics.fmean(pair[i] for pair in prompts.values())
                                  for prompts in per_seed.values()) for i in (0, 1)]
        result["groups"][group] = {"cases": sum(map(len, per_seed.values())), "mean_a": means[0], "mean_b": means[1],
                                   "gain": gain["mean"], "ci95": gain["ci95"]}
    return result


def format_split(result: dict[str, Any], names: tuple[str, str] = ("a", "b")) -> str:
    from safealign.report import numbers

    a, b = names
    rows = [["group", "cases", f"{b} margin", f"{a} margin", f"gain {a} − {b} [95%]"]]
    for group, d in result["groups"].items():
        rows.append([group.replace("b ", f"{b} "), str(d["cases"]), f"{d['mean_b']:.2f}", f"{d['mean_a']:.2f}",
                     numbers.difference({"diff": d["gain"], "ci95": d["ci95"]})])
    flips = result["flips"]
    figure = "open held-out refusal margin" if result.get("open") else "held-out refusal margin"
    return "\n".join([f"{figure} (nats) by {b}'s greedy {result['attack']} outcome, {result['seeds']} "
                      "seed(s); 95% hierarchical interval (seeds and prompts, crossed)", *numbers.render(rows),
                      f"greedy outcome flipped: {b} complied → {a} refused in {flips['b complied, a refused']} "
                      f"case(s), {b} refused → {a} complied in {flips['b refused, a complied']}"])

"""Paired log-prob margins of two variants: how much more one raised the preference for chosen responses.

Input: ``safealign diagnose ranking`` outputs of two variants (e.g. E-DPO and DPO), one per training seed
and in the same seed order, all scored on the same pairs. Per pair the margin is
``log π(chosen|x) − log π(rejected|x)`` under the trained model; on self-generated safety pairs that is the
refusal-vs-compliance margin for harmful prompts and the answer-vs-refusal margin for benign ones. With the
pairs file (``data``) the comparison is split by its ``harmful`` flag. The statistics are
:func:`safealign.eval.paired.paired_mean_difference` (docs/algorithms.md, "Paired comparison of two
variants"); ``reference_margin`` is the same margin under the rankings' reference (the base model when the
ranking ran with ``--ref`` or on an adapter), read from variant a's first output, over the same pairs as the
means (those every output scored).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from safealign.errors import UserError
from safealign.files import read_text
from safealign.io import parse_jsonl

PAIRS_FILE = "ranking_pairs.jsonl"


@dataclass
class PairedMarginConfig:
    a: list[str] = field(default_factory=list)  # ranking outputs of variant a, one per seed
    b: list[str] = field(default_factory=list)  # the same for variant b, in the same seed order
    names: list[str] = field(default_factory=lambda: ["a", "b"])
    data: Optional[str] = None  # the pairs file the rankings scored: split the comparison by its harmful flag
    format: str = "auto"
    resamples: int = 2000
    seed: int = 0


def read_ranking_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Per-pair rows of one ranking output: a run directory (``RUN/diagnostics/ranking_pairs.jsonl``), a
    folder holding ``ranking_pairs.jsonl``, that file itself, or the dict ``diagnose ranking --json`` prints."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "diagnostics" / PAIRS_FILE, path / PAIRS_FILE]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(f"{path}: no {PAIRS_FILE} (looked in {path / 'diagnostics'} and {path})")
        path = found
    if not path.is_file():
        raise UserError(f"{path}: no such ranking output")
    text = read_text(path, "ranking output")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
        rows = data.get("per_pair") if isinstance(data, dict) else None
        if rows is None:
            raise UserError(f"{path}: not a 'diagnose ranking --json' output (no 'per_pair' list)")
    else:
        rows = parse_jsonl(text, path)
    for i, row in enumerate(rows):
        if not {"row", "chosen_logps", "rejected_logps"} <= set(row):
            raise UserError(f"{path}: pair {i} lacks row/chosen_logps/rejected_logps; is it a ranking output?")
    return rows


def margins(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """data row (as text) -> ``chosen − rejected`` log-prob margin (``prefix="ref_"``: the reference's)."""
    return {str(r["row"]): r[f"{prefix}chosen_logps"] - r[f"{prefix}rejected_logps"] for r in rows
            if r.get(f"{prefix}chosen_logps") is not None and r.get(f"{prefix}rejected_logps") is not None}


def compare_margins(config: PairedMarginConfig) -> dict[str, Any]:
    """``{"a", "b", "groups": {group: comparison}}``; groups are ``harmful``/``benign`` with ``data``, else ``all``."""
    from safealign.eval.paired import paired_mean_difference

    if not config.a or len(config.a) != len(config.b):
        raise UserError(f"paired-margin needs one ranking output per seed for both variants, in the same "
                        f"order; got {len(config.a)} and {len(config.b)}")
    if len(config.names) != 2:
        raise UserError(f"names must be two names (a, b), got {config.names}")
    outputs = {v: [read_ranking_pairs(p) for p in paths] for v, paths in (("a", config.a), ("b", config.b))}
    groups = _groups(config.data, config.format)
    result: dict[str, Any] = {"a": config.names[0], "b": config.names[1], "seeds": len(config.a), "groups": {}}
    for group, rows in groups.items():
        per = {v: {s: _only(margins(out), rows) for s, out in enumerate(outs)} for v, outs in outputs.items()}
        if not any(per["a"].values()):
            continue
        comparison = paired_mean_difference(per["a"], per["b"], resamples=config.resamples, seed=config.seed)
        # over the pairs the comparison's means use (scored in every output), not every pair a's first output has
        shared = set.intersection(*(set(m) for outs in per.values() for m in outs.values()))
        reference = _only(margins(outputs["a"][0], "ref_"), shared)
        comparison["reference_margin"] = statistics.fmean(reference.values()) if reference else None
        result["groups"][group] = comparison
    if not result["groups"]:
        raise UserError("paired-margin: no pair of the data appears in the ranking outputs")
    return result


def _groups(data: Optional[str], format: str) -> dict[str, Optional[set[str]]]:
    if data is None:
        return {"all": None}
    from safealign.data import load_preferences

    pairs = [p for p in load_preferences(data, format=format).items if hasattr(p, "chosen")]
    return {name: {str(p.row) for p in pairs if bool(p.harmful) == flag}
            for name, flag in (("harmful", True), ("benign", False))}


def _only(values: dict[str, float], rows: Optional[set[str]]) -> dict[str, float]:
    return values if rows is None else {k: v for k, v in values.items() if k in rows}


def format_margins(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    lines = [f"paired log-prob margin {a} − {b} (chosen − rejected, nats; mean over {result['seeds']} seed(s), "
             "95% paired bootstrap over prompts)"]
    for group, d in result["groups"].items():
        lo, hi = d["ci95"]
        ref = "-" if d["reference_margin"] is None else f"{d['reference_margin']:.2f}"
        per_seed = ", ".join(f"{v:+.2f}" for v in d["per_seed"].values())
        lines.append(f"{group}: {d['n_prompts']} pairs; reference {ref}, {b} {d['mean_b']:.2f}, {a} {d['mean_a']:.2f}; "
                     f"{a} − {b} {d['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]; per seed {per_seed}; "
                     f"{a} higher on {d['a_higher']} of {d['n_prompts'] * d['seeds']} prompt×seed cases")
    return "\n".join(lines)

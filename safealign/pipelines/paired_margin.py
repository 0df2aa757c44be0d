"""Paired log-prob margins of two variants: how much more one raised the preference for chosen responses.

Input: ``safealign diagnose ranking`` outputs of two variants (e.g. E-DPO and DPO), one per training seed
and in the same seed order, all scored on the same pairs. Per pair the margin is
``log π(chosen|x) − log π(rejected|x)`` under the trained model; on self-generated safety pairs that is the
refusal-vs-compliance margin for harmful prompts and the answer-vs-refusal margin for benign ones. With the
pairs file (``data``) the comparison is split by its ``harmful`` flag. With several seeds the statistics are
:func:`safealign.eval.paired.hierarchical_difference`, the interval eval-difference and the sweep give (seeds and
prompts crossed, a random-effects t): seeds vary, and a bootstrap over prompts with the seeds held fixed ignores
that (on 73 pairs and three seeds differing by +6.5, +8.3 and +1.3 nats it gave about [+4.6, +6.1], where seeds as
the unit give about [−3, +14]). One
seed has no seed-to-seed spread to estimate: :func:`safealign.eval.paired.paired_mean_difference`, a paired
bootstrap over prompts (docs/algorithms.md, "Paired comparison of two variants"). Each group's ``interval`` names
the method. ``reference_margin`` is the same margin under the rankings' reference (the base model when the
ranking ran with ``--ref`` or on an adapter), read from variant a's first output, over the same pairs as the
means (those every output scored).

Pairs are matched by data row. Each ranking pair row records the pair's ``harmful`` flag as the ranking used it
(after its ``--harmful``/``--column``/``--split``/``--limit``) and a hash of its prompt: the split follows the
recorded flags (a pair without one is refused: it cannot be put in either group), and a row whose prompt hash
differs between two outputs is refused (rankings of different data). Outputs written before rows recorded these
are grouped by the flag the ``data`` file gives, and refused where their ``ranking.json`` names other data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from safealign.errors import UserError
from safealign.files import read_text
from safealign.io import parse_jsonl

PAIRS_FILE = "ranking_pairs.jsonl"
SUMMARY_FILE = "ranking.json"
SHOWN_ROWS = 5  # rows of each output an error lists
ONE_SEED_INTERVAL = "paired bootstrap over prompts (one seed; percentile)"

logger = logging.getLogger(__name__)


@dataclass
class PairedMarginConfig:
    a: list[str] = field(default_factory=list)  # ranking outputs of variant a, one per seed
    b: list[str] = field(default_factory=list)  # the same for variant b, in the same seed order
    names: list[str] = field(default_factory=lambda: ["a", "b"])
    data: Optional[str] = None  # the pairs file the rankings scored: split the comparison by its harmful flag
    format: str = "auto"
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        from safealign.checks import at_least

        at_least("resamples", self.resamples, 1)


@dataclass(frozen=True)
class RankingOutput:
    """One ranking output: the file its rows were read from, the rows, and the data its summary names (the
    ``ranking.json`` beside the rows, or the ``--json`` dict itself; None where there is none)."""

    path: Path
    rows: list[dict[str, Any]]
    data: Optional[str] = None
    summary: Optional[Path] = None

    @property
    def records_pairs(self) -> bool:
        """Whether every row records its harmful flag and prompt hash (written by this version of the ranking)."""
        return all("harmful" in r and "prompt_hash" in r for r in self.rows)


def prompt_hash(pair: Any) -> str:
    """A short hash of a pair's prompt (messages and any response prefix), written into each ranking pair row so
    that rankings compared by row can be checked to have scored the same prompt under that row."""
    text = json.dumps([[dict(m) for m in pair.prompt], pair.response_prefix], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_ranking_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Per-pair rows of one ranking output: a run directory (``RUN/diagnostics/ranking_pairs.jsonl``), a
    folder holding ``ranking_pairs.jsonl``, that file itself, or the dict ``diagnose ranking --json`` prints."""
    return read_ranking_output(path).rows


def read_ranking_output(path: str | Path) -> RankingOutput:
    """:func:`read_ranking_pairs` with where the rows came from and the data the ranking's summary names."""
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
    summary: Optional[Path] = None
    if path.suffix == ".json":
        data = _json(path, text)
        rows = data.get("per_pair") if isinstance(data, dict) else None
        if rows is None:
            raise UserError(f"{path}: not a 'diagnose ranking --json' output (no 'per_pair' list)")
        summary, recorded = path, data.get("data")
    else:
        rows = parse_jsonl(text, path)
        recorded = None
        if (path.parent / SUMMARY_FILE).is_file():
            summary = path.parent / SUMMARY_FILE
            written = _json(summary, read_text(summary, "ranking summary"))
            recorded = written.get("data") if isinstance(written, dict) else None
    for i, row in enumerate(rows):
        if not {"row", "chosen_logps", "rejected_logps"} <= set(row):
            raise UserError(f"{path}: pair {i} lacks row/chosen_logps/rejected_logps; is it a ranking output?")
    return RankingOutput(path, rows, str(recorded) if recorded is not None else None, summary)


def _json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def margins(rows: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """data row (as text) -> ``chosen − rejected`` log-prob margin (``prefix="ref_"``: the reference's)."""
    return {str(r["row"]): r[f"{prefix}chosen_logps"] - r[f"{prefix}rejected_logps"] for r in rows
            if r.get(f"{prefix}chosen_logps") is not None and r.get(f"{prefix}rejected_logps") is not None}


def compare_margins(config: PairedMarginConfig) -> dict[str, Any]:
    """``{"a", "b", "groups": {group: comparison}}``; groups are ``harmful``/``benign`` with ``data``, else ``all``."""
    from safealign.eval.paired import hierarchical_difference, paired_mean_difference

    if not config.a or len(config.a) != len(config.b):
        raise UserError(f"paired-margin needs one ranking output per seed for both variants, in the same "
                        f"order; got {len(config.a)} and {len(config.b)}")
    if len(config.names) != 2:
        raise UserError(f"names must be two names (a, b), got {config.names}")
    outputs = {v: [read_ranking_output(p) for p in paths] for v, paths in (("a", config.a), ("b", config.b))}
    every = [*outputs["a"], *outputs["b"]]
    _check_same_prompts(every)
    if not all(out.records_pairs for out in every):  # written before rows recorded their prompt: check the data
        _check_same_data(every, config.data)
    groups = _groups(every, config.data, config.format)
    result: dict[str, Any] = {"a": config.names[0], "b": config.names[1], "seeds": len(config.a), "groups": {}}
    for group, rows in groups.items():
        per = {v: {s: _only(margins(out.rows), rows) for s, out in enumerate(outs)} for v, outs in outputs.items()}
        if not any(per["a"].values()):
            continue
        # the pairs the comparison's means use (scored in every output), for the reference margin too
        shared = set.intersection(*(set(m) for outs in per.values() for m in outs.values()))
        if not shared:
            raise UserError(_nothing_shared(group, outputs, per))
        if len(config.a) > 1:  # seeds vary: the interval must cover them, not hold them fixed
            comparison = hierarchical_difference(per["a"], per["b"])
        else:
            comparison = {**paired_mean_difference(per["a"], per["b"], resamples=config.resamples, seed=config.seed),
                          "interval": ONE_SEED_INTERVAL, "df": None}
        reference = _only(margins(outputs["a"][0].rows, "ref_"), shared)
        comparison["reference_margin"] = statistics.fmean(reference.values()) if reference else None
        result["groups"][group] = comparison
    if not result["groups"]:
        raise UserError("paired-margin: no pair of the data appears in the ranking outputs")
    return result


def _nothing_shared(group: str, outputs: dict[str, list[RankingOutput]],
                    per: dict[str, dict[int, dict[str, float]]]) -> str:
    """The error of a group no pair of which every output scored: each output's file and some of its rows."""

    def sample(rows: dict[str, float]) -> str:
        ordered = sorted(rows, key=lambda r: (0, int(r), r) if r.lstrip("-").isdigit() else (1, 0, r))
        return (", ".join(ordered[:SHOWN_ROWS]) + (f", ... ({len(ordered)} in all)" if len(ordered) > SHOWN_ROWS
                                                    else "")) if ordered else "none"

    sides = "; ".join(f"{out.path} ({v}, seed {s}): rows {sample(per[v][s])}"
                      for v, outs in outputs.items() for s, out in enumerate(outs))
    return (f"paired-margin, group {group!r}: no pair was scored in every ranking output ({sides}); pairs are "
            "compared by data row, so every ranking must score the same data")


def _check_same_prompts(outputs: list[RankingOutput]) -> None:
    """A row whose recorded prompt hash differs between two outputs was another prompt in each: the rankings
    scored different data, and comparing them by row would pair unrelated prompts."""
    seen: dict[str, tuple[str, Path]] = {}
    for out in outputs:
        for r in out.rows:
            if r.get("prompt_hash") is None:
                continue
            key = str(r["row"])
            first = seen.setdefault(key, (r["prompt_hash"], out.path))
            if first[0] != r["prompt_hash"]:
                raise UserError(f"{first[1]} and {out.path}: row {key} is a different prompt in each (prompt hash "
                                f"{first[0]} vs {r['prompt_hash']}); pairs are compared by data row, so every "
                                "ranking must score the same data")


def _check_same_data(outputs: list[RankingOutput], data: Optional[str]) -> None:
    """Outputs without prompt hashes can only be checked by the data their summaries name: the same for every
    output, and ``data`` where given. Paths are compared as files where both exist here; a recorded path that does
    not (relative to another working directory) is passed over with a warning."""
    named = [(str(out.summary), out.data) for out in outputs if out.data is not None]
    if data is not None:
        named.append(("--data", data))
    for where, value in named[1:]:
        same = _same_data(named[0][1], value)
        if same is False:
            raise UserError(f"{named[0][0]} names data {named[0][1]} and {where} {value}: the rankings must all have "
                            "scored the data compared (pairs are compared by data row)")
        if same is None:
            logger.warning("paired-margin: cannot tell whether %s (%s) and %s (%s) are the same data", named[0][1],
                           named[0][0], value, where)


def _same_data(x: str, y: str) -> Optional[bool]:
    """Whether two data specs name the same data: equal text, or the same file; None where one is a file here and
    the other is not (a path relative to another working directory)."""
    if x == y:
        return True
    files = [Path(v).is_file() for v in (x, y)]
    if all(files):
        return Path(x).resolve() == Path(y).resolve()
    return False if not any(files) else None


def _groups(outputs: list[RankingOutput], data: Optional[str], format: str) -> dict[str, Optional[set[str]]]:
    """``all``, or with ``data`` the harmful and benign rows: by the flag each ranking recorded for its pair, else
    (an output written before rows recorded it) by the flag ``data`` gives the row. A compared row without a flag
    is refused: it belongs to neither group."""
    if data is None:
        return {"all": None}
    flags = _recorded_flags(outputs)
    if not all(out.records_pairs for out in outputs):
        from safealign.data import load_preferences

        for p in load_preferences(data, format=format).items:
            if hasattr(p, "chosen"):
                flags.setdefault(str(p.row), (p.harmful, data))
    for out in outputs:
        for r in out.rows:
            flag, where = flags.get(str(r["row"]), (False, ""))
            if flag is None and where == data:
                raise UserError(f"{data}: row {r['row']} has no harmful flag, and {out.path} predates ranking outputs "
                                "that record the flag the ranking used (e.g. from --harmful): rank again to record "
                                "it, or compare without --data")
            if flag is None:
                raise UserError(f"{where}: row {r['row']} has no harmful flag (data without a harmful column, ranked "
                                "without --harmful), so --data cannot put it with the harmful or the benign pairs; "
                                "compare without --data, or rank data that flags every pair")
    return {name: {row for row, (flag, _) in flags.items() if flag is want}
            for name, want in (("harmful", True), ("benign", False))}


def _recorded_flags(outputs: list[RankingOutput]) -> dict[str, tuple[Optional[bool], str]]:
    """row -> (the harmful flag the rankings recorded, the file), the same in every output that records it."""
    flags: dict[str, tuple[Optional[bool], str]] = {}
    for out in outputs:
        for r in out.rows:
            if "harmful" not in r:
                continue
            key = str(r["row"])
            first = flags.setdefault(key, (r["harmful"], str(out.path)))
            if first[0] != r["harmful"]:
                raise UserError(f"{first[1]} and {out.path}: row {key} is harmful={first[0]} in one and "
                                f"harmful={r['harmful']} in the other; the rankings flagged their pairs differently "
                                "(--harmful given to one only?)")
    return flags


def _only(values: dict[str, float], rows: Optional[set[str]]) -> dict[str, float]:
    return values if rows is None else {k: v for k, v in values.items() if k in rows}


def format_margins(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]
    how = ("95% interval: seeds and prompts crossed, random-effects t" if result["seeds"] > 1
           else "95% paired bootstrap over prompts")
    lines = [f"paired log-prob margin {a} − {b} (chosen − rejected, nats; mean over {result['seeds']} seed(s); "
             f"{how})"]
    for group, d in result["groups"].items():
        lo, hi = d["ci95"]
        df = "" if d.get("df") is None else f" (df {d['df']:.1f})"
        ref = "-" if d["reference_margin"] is None else f"{d['reference_margin']:.2f}"
        per_seed = ", ".join(f"{v:+.2f}" for v in d["per_seed"].values())
        lines.append(f"{group}: {d['n_prompts']} pairs; reference {ref}, {b} {d['mean_b']:.2f}, {a} {d['mean_a']:.2f}; "
                     f"{a} − {b} {d['diff']:+.2f} [{lo:+.2f}, {hi:+.2f}]{df}; per seed {per_seed}; "
                     f"{a} higher on {d['a_higher']} of {d['n_prompts'] * d['seeds']} prompt×seed cases")
    return "\n".join(lines)

"""Row transforms: rewrite a run's preference rows before tokenization (``data.transforms`` in a recipe).

Each transform is a pure, seeded function ``fn(rows, *, seed, **params) -> rows`` registered in
:data:`ROW_TRANSFORMS` with the row fields it cannot work without (``needs``). The fields are checked
before any model loads (:func:`check_needs`); a missing one stops with a ``UserError`` naming the field
and the data layout that provides it. Formulas and sources: docs/safety-training.md.

- ``flags_from_harmful``: the per-response safety labels implied by the self-generated pairs of
  ``safealign data build-safety`` / the demo (harmful row: chosen refusal safe, rejected compliance
  unsafe; benign row: both safe).
- ``safety_order``: SafeDPO's T(D): an unsafe chosen with a safe rejected is swapped, a pair of two unsafe
  responses dropped.
- ``recovery``: Qi et al. 2024's safety-recovery augmentation: a harmful prefix, then the refusal.
- ``derta``: DeRTa's harmful-prefix rows plus reinforced-transition (RTO) rows.

Randomness is drawn per row from ``(seed, transform, row number, row content)``. The row number is the row's position
in its source (``PreferencePair.row``), so dropping other rows after reading (``data.limit``, ``safety_order``) leaves
a row's draws as they were, but inserting, removing or reordering rows in the source renumbers the rows after them
and changes their draws. One rule is positional, not drawn: ``derta`` gives k = 0 (no harmful prefix)
to the 3rd, 6th, 9th, … refusal row in input order (counting refusal rows only), so which rows get it depends on the
order of the refusal rows. This is not quite the released generator's rule, which gives k = 0 to the 1st, 4th, 7th, …
row of its safety file (``i % 3 == 0``) and skips rows under 3 words (see :func:`derta`); finished experiments
depend on this rule, keep it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import re
from typing import Any, Callable, Mapping, Sequence

from safealign.errors import UserError
from safealign.registry import Registry
from safealign.types import PreferencePair

logger = logging.getLogger(__name__)

RowTransform = Callable[..., list[PreferencePair]]
ROW_TRANSFORMS: Registry[RowTransform] = Registry("data transform")

# needed field -> (what a row must carry, the layouts that provide it)
FIELD_SOURCES = {
    "harmful": ("a 'harmful' flag", "a 'harmful' column (self-generated pairs from `safealign data build-safety` "
                "carry one) or data.harmful=true|false for the whole file"),
    "chosen_safe": ("a safety label of each response", "'chosen_safe'/'rejected_safe' columns, the 'pku_saferlhf' "
                    "format (is_response_0_safe, is_response_1_safe, better_response_id), or the "
                    "'flags_from_harmful' transform for self-generated pairs"),
    "refusal": ("a harmful row with a refusal (chosen, safe) and a harmful response (rejected, unsafe)",
                "self-generated pairs (`safealign data build-safety`, the demo's pairs.jsonl) with the "
                "'flags_from_harmful' transform, or any pairs with 'harmful', 'chosen_safe', 'rejected_safe' columns"),
}


def register_row_transform(name: str, *, needs: tuple[str, ...], paper: str) -> Callable[[RowTransform], RowTransform]:
    """Register ``fn(rows, *, seed, **params)``; ``needs`` are keys of :data:`FIELD_SOURCES`."""
    unknown = [n for n in needs if n not in FIELD_SOURCES]
    if unknown:
        raise ValueError(f"data transform {name!r}: unknown needs {unknown}; known: {', '.join(FIELD_SOURCES)}")
    return ROW_TRANSFORMS.register(name, needs=needs, paper=paper)


def check_needs(specs: Sequence[Mapping[str, Any]], rows: Sequence[PreferencePair], where: str) -> None:
    """UserError naming the missing field and the layout that provides it, for the first transform whose
    needs the rows (as rewritten by the transforms before it, which may supply fields) do not meet."""
    rows = list(rows)
    for spec in specs:
        name = spec["name"]
        for need in ROW_TRANSFORMS.meta(name)["needs"]:
            lacking = _lacking(need, rows)
            if lacking is not None:
                what, provided_by = FIELD_SOURCES[need]
                raise UserError(f"data transform {name!r} needs {what}, but in {where} {lacking}; "
                                f"missing field {need!r}: provided by {provided_by} (docs/safety-training.md)")
        rows = _run(spec, rows, seed=0)  # the next transform's needs are checked on this one's output


def _lacking(need: str, rows: Sequence[PreferencePair]) -> str | None:
    if need == "harmful":
        missing = [r.row for r in rows if r.harmful is None]
    elif need == "chosen_safe":
        missing = [r.row for r in rows if r.chosen_safe is None or r.rejected_safe is None]
    else:  # refusal: at least one row to build from
        return None if any(_is_refusal_pair(r) for r in rows) else f"none of the {len(rows)} rows has one"
    if not missing:
        return None
    return f"{len(missing)} of {len(rows)} rows lack it (e.g. row {', '.join(map(str, missing[:5]))})"


def apply_row_transforms(specs: Sequence[Mapping[str, Any]], rows: Sequence[PreferencePair], *,
                         seed: int) -> list[PreferencePair]:
    """Run the transforms in order; ``specs`` are ``{name, params?}`` mappings."""
    out = list(rows)
    for spec in specs:
        before = len(out)
        out = _run(spec, out, seed=seed)
        logger.info("data transform %s: %d rows -> %d", spec["name"], before, len(out))
    return out


def validate_specs(specs: Sequence[Any], key: str = "data.transforms") -> list[dict[str, Any]]:
    """``[{name, params?}]`` with known names and parameters (checked against each function's signature)."""
    from safealign.params import check_params, signature_params

    out = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping) or "name" not in spec or set(spec) - {"name", "params"}:
            raise UserError(f"{key}.{i}: expected a name or {{name, params}}, got {spec!r}")
        fn = ROW_TRANSFORMS.get(spec["name"])
        defaults, hints = signature_params(fn)
        defaults = {k: v for k, v in defaults.items() if k not in ("rows", "seed")}
        params = check_params(f"{key}.{i}: data transform {spec['name']!r}", dict(spec.get("params") or {}),
                              defaults, hints)
        out.append({"name": spec["name"], "params": params})
    return out


def _run(spec: Mapping[str, Any], rows: list[PreferencePair], *, seed: int) -> list[PreferencePair]:
    return ROW_TRANSFORMS.get(spec["name"])(rows, seed=seed, **dict(spec.get("params") or {}))


def _rng(seed: int, name: str, row: PreferencePair) -> random.Random:
    # keyed by the row's content, not its file's path: the same data draws the same rewrites wherever it lives
    content = json.dumps([row.row, list(row.prompt), row.chosen, row.rejected], sort_keys=True)
    return random.Random(f"{seed}:{name}:{hashlib.sha256(content.encode()).hexdigest()}")


def _is_refusal_pair(row: PreferencePair) -> bool:
    """A harmful row whose chosen response is the safe refusal and rejected the unsafe answer."""
    return bool(row.harmful) and row.chosen_safe is True and row.rejected_safe is False and not row.response_prefix


# --------------------------------------------------------------------------- safety labels
@register_row_transform("flags_from_harmful", needs=("harmful",),
                        paper="the self-generated pair layout of safealign/data/safety_pairs.py")
def flags_from_harmful(rows: Sequence[PreferencePair], *, seed: int = 0) -> list[PreferencePair]:
    """Safety labels of self-generated pairs: on a harmful prompt the chosen refusal is safe and the rejected
    compliance unsafe; on a benign prompt both the model's answer and the refusal are safe. Labels the
    data already carries are kept."""
    def label(row: PreferencePair) -> PreferencePair:
        chosen = True if row.chosen_safe is None else row.chosen_safe
        rejected = (not row.harmful) if row.rejected_safe is None else row.rejected_safe
        return dataclasses.replace(row, chosen_safe=chosen, rejected_safe=rejected)

    return [label(r) for r in rows]


@register_row_transform("safety_order", needs=("chosen_safe",),
                        paper="Kim et al. 2025, SafeDPO, arXiv:2505.20065 (the transform T(D))")
def safety_order(rows: Sequence[PreferencePair], *, seed: int = 0) -> list[PreferencePair]:
    """SafeDPO's T(D): chosen safe → kept; chosen unsafe and rejected safe → swapped; both unsafe → dropped
    (the last rule from a third-party reimplementation; docs/safety-training.md). A swapped row's
    ``chosen_scores`` scored the other response and are dropped."""
    out = []
    for row in rows:
        if row.chosen_safe:
            out.append(row)
        elif row.rejected_safe:
            out.append(_swapped(row, chosen_safe=True, rejected_safe=False, chosen_scores=None))
    return out


def _swapped(row: PreferencePair, **changes: Any) -> PreferencePair:
    """The row with chosen and rejected exchanged, and with them what ``meta`` says of each side (``chosen_cut`` /
    ``rejected_cut``: which answer stopped at the generation limit, trained without its end-of-turn tokens) and, in a
    cross-prompt (joint) pair, the prompt each answers: the sides are whole (prompt, answer) pairs."""
    meta = {k: v for k, v in row.meta.items() if k not in ("chosen_cut", "rejected_cut")}
    meta.update({new: row.meta[old] for old, new in (("chosen_cut", "rejected_cut"), ("rejected_cut", "chosen_cut"))
                 if old in row.meta})
    if row.rejected_prompt is not None:
        changes = {"prompt": row.rejected_prompt, "rejected_prompt": row.prompt, **changes}
    return dataclasses.replace(row, chosen=row.rejected, rejected=row.chosen, **{"meta": meta, **changes})


# --------------------------------------------------------------------------- harmful prefixes
def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"\S+", text))


def _prefixed(row: PreferencePair, k: int, transform: str) -> PreferencePair:
    """The row with the first ``k`` words of its harmful (rejected) response as an assistant prefix: chosen
    = the refusal after it, rejected = the rest of the harmful response. ``k = 0``: the row itself."""
    meta = {**row.meta, "transform": transform, "prefix_words": k}
    if k == 0:
        return dataclasses.replace(row, meta=meta)
    cut = _words(row.rejected)[k - 1].end()
    return dataclasses.replace(row, response_prefix=row.rejected[:cut], chosen=" " + row.chosen.strip(),
                               rejected=row.rejected[cut:], meta=meta)


@register_row_transform("recovery", needs=("harmful", "chosen_safe", "refusal"),
                        paper="Qi et al. 2024, Safety Alignment Should Be Made More Than Just a Few Tokens Deep, "
                              "arXiv:2406.05946 (data augmentation)")
def recovery(rows: Sequence[PreferencePair], *, seed: int = 0, probability: float = 0.5,
             max_prefix_words: int = 100) -> list[PreferencePair]:
    """Each refusal row becomes, with ``probability``, a recovery example: the first k words of its harmful
    response as an assistant prefix, then the refusal (chosen) vs the rest of the harmful response (rejected),
    k ~ Uniform{1..min(max_prefix_words, n − 1)} for n words (the paper: tokens, up to 100, and the whole
    answer allowed; here one word is always left so the pair has a rejected side). Other rows pass through.

    The draw (augment or not, and k) is made once per row for the whole run, where the official
    ``gen_safety_augmentation_batch`` redraws each time a batch is built: the same for one epoch, but with
    ``num_train_epochs`` > 1 a row repeats its one prefix (docs/safety-training.md). Kept: finished runs' data
    depends on it."""
    if not 0 <= probability <= 1:
        raise UserError(f"data transform 'recovery': probability must be in [0, 1], got {probability}")
    if max_prefix_words < 1:
        raise UserError(f"data transform 'recovery': max_prefix_words must be >= 1, got {max_prefix_words}")
    out = []
    for row in rows:
        n = len(_words(row.rejected))
        if not _is_refusal_pair(row) or n < 2:
            out.append(row)
            continue
        rng = _rng(seed, "recovery", row)
        augment = rng.random() < probability
        k = rng.randint(1, min(max_prefix_words, n - 1)) if augment else 0
        out.append(_prefixed(row, k, "recovery"))
    return out


@register_row_transform("derta", needs=("harmful", "chosen_safe", "refusal"),
                        paper="Yuan et al. 2024, DeRTa: Decoupled Refusal Training, arXiv:2407.09121")
def derta(rows: Sequence[PreferencePair], *, seed: int = 0, rto: bool = True) -> list[PreferencePair]:
    """DeRTa's safety rows from each refusal row: (1) harmful-prefix MLE: the first k words of the harmful
    response, then the refusal, k ~ randint(1, n − 2) for n words, except k = 0 for the 3rd, 6th, 9th, … refusal
    row in input order (a position among the refusal rows, not a draw) and for rows of fewer than 3 words; (2) with
    ``rto``, a reinforced-transition row: the whole harmful response as input, every position trained to predict
    the refusal's first token. Other rows pass through.

    The released generator (RobustNLP/DeRTa ``data/train/generate_training_data.py``) differs in two ways, kept
    because finished experiments depend on this rule: its k = 0 rows are the 1st, 4th, 7th, … of its safety file
    (index ``i % 3 == 0``, i counting every row, skipped ones included), not the 3rd, 6th, 9th; and a row under 3
    words (space-split) gets no prefix row at all (its ``randint(1, n − 2)`` fails and the row is skipped; its
    transition row is kept), where here it gets a k = 0 row."""
    out = []
    refusal_rows = 0
    for row in rows:
        if not _is_refusal_pair(row):
            out.append(row)
            continue
        n = len(_words(row.rejected))
        rng = _rng(seed, "derta", row)
        # not upstream's i % 3 == 0 (its 1st, 4th, … rows); finished experiments depend on this rule (docstring)
        k = 0 if refusal_rows % 3 == 2 or n < 3 else rng.randint(1, n - 2)
        refusal_rows += 1
        out.append(_prefixed(row, k, "derta"))
        if rto:
            rto_row = _swapped(row, chosen_safe=None, rejected_safe=None, chosen_target_refusal=row.chosen)
            out.append(dataclasses.replace(rto_row, meta={**rto_row.meta, "transform": "derta_rto"}))
    return out

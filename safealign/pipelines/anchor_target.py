"""What the E-anchor pulls towards: the reference's own answers to harmful prompts, as asked and as transformed.

E-RLHF's optimum for a harmful prompt x is ``π*(y|x) ∝ π_ref(y|x_s) · exp(r(x, y)/β)`` (docs/algorithms.md): where
the reward says nothing (every sample gets the same reward), the KL term pulls the policy towards the reference's
answers *given the transformed prompt* x_s. The anchor gap (``safealign diagnose anchor``) says how far the
transform moves the reference's log-probs of fixed chosen/rejected answers; this says what the reference then
actually answers: the refusal rate of its greedy answers, and of ``samples`` sampled ones (temperature 1, what
an online run's policy samples), with and without the transform, judged by the refusal-substring judge. A
transformed reference that still complies is a target the KL anchor alone cannot make refuse, whatever β.
"""

from __future__ import annotations

from typing import Any, Sequence

from safealign.eval.backends.base import GenerationParams, with_seeds
from safealign.eval.backends.hf import HFChatModel
from safealign.eval.judges.refusal import RefusalConfig, RefusalJudge
from safealign.eval.paired import constant_outcome_interval, paired_difference, prompt_bootstrap_mean
from safealign.eval.summary import wilson_interval
from safealign.models.modes import eval_mode
from safealign.train.reference import adapter_disabled
from safealign.types import Behavior, Completion, PreferencePair


def anchor_target(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], transform: Any, *, prompts: int,
                  samples: int, max_new_tokens: int, batch_size: int,
                  seed: int = 0) -> tuple[dict, list[dict]]:  # fmt: skip
    """Refusal rates of the reference (``model`` with any adapter disabled) on the first ``prompts`` harmful
    pairs' prompts, as asked and under ``transform``: greedy, and over ``samples`` sampled answers each (0: none).
    Returns the summary and one row per prompt (``index``: the pair's position in ``pairs``)."""
    positions = [i for i, p in enumerate(pairs) if p.harmful is True][:prompts]
    harmful = [pairs[i] for i in positions]
    views = {"plain": [p.prompt for p in harmful], "transformed": [transform(p.prompt, True) for p in harmful]}
    judge = RefusalJudge(RefusalConfig())
    target = HFChatModel(model, tokenizer)
    ids = [f"prompt{i}" for i in range(len(harmful))]  # positions: rows of merged files may repeat
    behaviors = [Behavior(id=i, behavior=p.prompt[-1]["content"]) for i, p in zip(ids, harmful)]
    modes = {"greedy": GenerationParams(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed)}
    if samples:
        modes["sampled"] = GenerationParams(max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=True,
                                            temperature=1.0, seed=seed)
    summary: dict[str, Any] = {"prompts": len(harmful), "judge": f"refusal ({judge.config.list} substrings)",
                               "max_new_tokens": max_new_tokens, "samples_per_prompt": samples}
    rows = [{"index": i, "row": p.row, "prompt": p.prompt[-1]["content"]} for i, p in zip(positions, harmful)]
    with adapter_disabled(model), eval_mode(model):  # the reference the trainer anchors to, no dropout
        for mode, params in modes.items():
            copies = samples if mode == "sampled" else 1
            refused = {view: _refusal_fractions(target, judge, behaviors, conversations, params, copies, view)
                       for view, conversations in views.items()}
            summary[mode] = _compare(ids, refused, copies)
            for i, row in enumerate(rows):
                row.update({f"{mode}_refused_{view}": refused[view][i] for view in views})
    return summary, rows


def _refusal_fractions(target: HFChatModel, judge: RefusalJudge, behaviors: list[Behavior], conversations: list,
                       params: GenerationParams, copies: int, view: str) -> list[float]:  # fmt: skip
    """Per prompt, the share of its ``copies`` answers the judge reads as refusals (an answer whose generation
    failed counts as not refused, so the rate is a lower bound; failures are rare and logged by the backend).
    Sample ``k`` of a prompt draws with the seed of (prompt id, ``view``, k): by place, the plain and the transformed
    view (and prompt i of any call) would draw the same random numbers."""
    seeded = with_seeds(params, [(b.id, view, k) for b in behaviors for k in range(copies)])
    answers: list[Completion] = target.generate([c for c in conversations for _ in range(copies)], seeded)
    verdicts = judge([b for b in behaviors for _ in range(copies)], answers)
    refused = [v.harmful is False and a.error is None for v, a in zip(verdicts, answers)]
    return [sum(refused[i * copies:(i + 1) * copies]) / copies for i in range(len(behaviors))]


def _compare(ids: list[str], refused: dict[str, list[float]], copies: int) -> dict[str, Any]:
    """Per view the refusal rate with its interval, and the paired difference transformed − plain. Fractions that
    are all 0 or 1 (one answer per prompt, or every prompt's samples agreeing) are outcomes: as bools the paired
    difference gets the exact bound where no prompt is discordant, and a rate of sampled fractions that never vary
    the exact bound for a rate of 0 or 1 (docs/algorithms.md, "Paired comparison of two variants"), where resampling
    prompts gave a zero-width interval that claims certainty."""
    out: dict[str, Any] = {}
    for view, fractions in refused.items():
        hits, total = round(sum(fractions) * copies), len(fractions) * copies
        out[f"refusal_rate_{view}"] = hits / total if total else None
        if not total:
            out[f"refusal_rate_{view}_ci95"] = None
        elif copies == 1:  # one answer per prompt: Wilson over prompts
            out[f"refusal_rate_{view}_ci95"] = list(wilson_interval(hits, total))
        else:  # a prompt's samples are not independent of each other: resample prompts, not answers
            constant = constant_outcome_interval(set(fractions), len(fractions), difference=False) \
                if set(fractions) <= {0.0, 1.0} else None
            out[f"refusal_rate_{view}_ci95"] = constant or prompt_bootstrap_mean(dict(zip(ids, fractions)))
    if ids:
        outcomes = all(f in (0.0, 1.0) for fractions in refused.values() for f in fractions)
        values = {view: [f == 1.0 for f in fractions] if outcomes else fractions
                  for view, fractions in refused.items()}
        difference = paired_difference({0: dict(zip(ids, values["transformed"]))},
                                       {0: dict(zip(ids, values["plain"]))})
        out["transformed_minus_plain"] = difference.to_json()
    return out

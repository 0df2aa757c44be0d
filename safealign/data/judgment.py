"""CUT's two views of a judged response: the plain prompt and the judgment-conditioned prompt.

CUT (Xu et al., "Reasons to Reject?", ACL 2024; docs/seed-methods.md) scores the same response tokens
after two prompts: the instruction x alone, and x with the judgment j of the response, under a template
that asks for a response matching the judgment. Here the judgment view rewrites the last user turn with
:data:`JUDGMENT_TEMPLATE` and is rendered by the model's own chat template. As with the E-RLHF reference
view (safealign/data/tokenize.py), the response is tokenized once and its ids follow both prompts, so the
two views score identical tokens. Only a negative row gets the judgment view: a positive is trained on the plain
prompt alone (Align-P), as in the official code, where it has no judgment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from safealign.data.collate import pad_sequences
from safealign.data.tokenize import Ids, PairEncoder, TruncationReport
from safealign.errors import UserError
from safealign.types import JudgmentExample, Message

log = logging.getLogger(__name__)

# Our wording of CUT's judgment-conditioned instruction ("write a response that matches the judgment").
JUDGMENT_TEMPLATE = ("{request}\n\nWrite a response to the request above that matches the following judgment "
                     "of it.\nJudgment: {judgment}")


def judgment_prompt(prompt: tuple[Message, ...], judgment: str) -> tuple[Message, ...]:
    """``prompt`` with its last user turn rewritten to carry ``judgment`` (the Align-N / detection view)."""
    last = next((i for i in range(len(prompt) - 1, -1, -1) if prompt[i]["role"] == "user"), None)
    if last is None:
        raise UserError("a judged example's prompt needs a user turn to attach the judgment to")
    turn = {**prompt[last], "content": JUDGMENT_TEMPLATE.format(request=prompt[last]["content"], judgment=judgment)}
    return (*prompt[:last], turn, *prompt[last + 1 :])


def require_judgments(examples: Sequence[JudgmentExample], positive_score: float) -> None:
    """UserError naming the first negative row (``score < positive_score``) that has no judgment: a negative
    teaches through its judgment (Align-N and the misalign ratio); a positive needs none."""
    missing = [ex for ex in examples if ex.score < positive_score and ex.judgment is None]
    if missing:
        ex = missing[0]
        raise UserError(f"{ex.source or '<rows>'} row {ex.row}: field 'judgment': a negative row (score {ex.score:g} "
                        f"< positive_score={positive_score:g}) needs a judgment to learn from; {len(missing)} such "
                        "row(s). Give it one, or drop the row")


@dataclass(frozen=True)
class EncodedJudgment:
    """Token ids of one judged example: its prompt views and the shared response. ``judged_prompt_ids`` is None
    for a positive: Align-P scores the plain view only."""

    index: int
    prompt_ids: Ids
    judged_prompt_ids: Ids | None
    response_ids: Ids
    score: float


def encode_judgments(encoder: PairEncoder, examples: Sequence[JudgmentExample], *, positive_score: float = 7.0
                     ) -> tuple[list[EncodedJudgment], TruncationReport]:
    """Encode every example (``index`` = position); prompts keep their end, the response is cut so the longer
    view it is scored after fits ``max_length``; a row whose prompt leaves no room for a response token is dropped.

    A positive (``score >= positive_score``) gets the plain view only, so its judgment (if any) neither costs it
    response tokens nor drops it; a negative gets both views."""
    require_judgments(examples, positive_score)
    out, dropped, prompts_cut, responses_cut, fallbacks = [], [], 0, 0, 0
    limit = encoder.max_prompt_length
    for index, ex in enumerate(examples):
        negative = ex.score < positive_score
        views = []
        for prompt in (ex.prompt, judgment_prompt(ex.prompt, ex.judgment)) if negative else (ex.prompt,):
            # a template error names the file and row, as the pair encoder's do
            ids = encoder._guarded(ex, lambda: _ids(encoder, encoder.render_prompt(prompt)))  # noqa: B023
            cut = ids[-limit:] if limit is not None and len(ids) > limit else ids
            prompts_cut += int(cut != ids)
            views.append(cut)
        budget = encoder.max_length - max(map(len, views))
        if budget < 1:
            dropped.append(index)
            continue
        rendered, fell_back = encoder._guarded(ex, lambda: encoder._render_response(ex.prompt, ex.completion))  # noqa: B023
        fallbacks += int(fell_back)
        response = _ids(encoder, rendered)
        responses_cut += int(len(response) > budget)
        out.append(EncodedJudgment(index, views[0], views[1] if negative else None, response[:budget], ex.score))
    report = TruncationReport(len(examples), prompts_cut, responses_cut, tuple(dropped), template_fallbacks=fallbacks)
    # logged like the pair encoder's report: a warning when anything was cut, dropped or rendered by the fallback
    (log.warning if prompts_cut or responses_cut or dropped or fallbacks else log.info)("judgment tokenization: %s",
                                                                                       report.summary())
    return out, report


def _ids(encoder: PairEncoder, text: str) -> Ids:
    return tuple(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])


class JudgmentCollator:
    """``list[EncodedJudgment]`` → plain view of every item (``input_ids``, ``attention_mask``,
    ``response_mask``), ``score`` ``(B,)``, ``index`` ``(B,)``, ``judged_rows`` (the batch positions of the items
    with a judgment view, the negatives) and, when there are any, their judgment view (``judged_*``, one row per
    entry of ``judged_rows``): a batch of positives needs no second forward pass."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: Sequence[EncodedJudgment]) -> dict[str, Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        judged = [i for i, it in enumerate(items) if it.judged_prompt_ids is not None]
        views = [("", items)] + ([("judged_", [items[i] for i in judged])] if judged else [])
        batch: dict[str, Tensor] = {}
        for prefix, view in views:
            prompts = [it.judged_prompt_ids if prefix else it.prompt_ids for it in view]
            ids, attention, response = pad_sequences(prompts, [it.response_ids for it in view], self.pad_token_id)
            batch.update({f"{prefix}input_ids": ids, f"{prefix}attention_mask": attention,
                          f"{prefix}response_mask": response})
        batch["judged_rows"] = torch.tensor(judged, dtype=torch.long)
        batch["score"] = torch.tensor([it.score for it in items], dtype=torch.float32)
        batch["index"] = torch.tensor([it.index for it in items], dtype=torch.long)
        return batch

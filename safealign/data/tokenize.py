"""Chat-template rendering and tokenization of pairs, with the E-RLHF reference view.

A prompt is rendered with the tokenizer's chat template (``add_generation_prompt=True``). A response is
rendered as the suffix the template adds for an assistant turn (render prompt + assistant message and
strip the rendered prompt; when the prompt rendering is not a prefix of it, fall back to
``response + eos_token``, counted per row in the :class:`TruncationReport` (``template_fallbacks``) and
warned). The response is tokenized ONCE; its ids are concatenated to the policy prompt ids and, when the
transform changes the prompt, to the reference prompt ids, so both models score identical response tokens.
Prompt + response are never re-tokenized as one string.

Truncation (counted in a :class:`TruncationReport` and logged, never silent): prompts longer than
``max_prompt_length`` keep their END (left truncation); responses are cut so that the POLICY prompt plus the
response fits ``max_length``, exactly as without a reference view, so an E-variant row trains on the response
tokens plain DPO trains on (a budget by the longer, prefixed reference prompt cut ~|prefix| more tokens from
E-DPO's harmful rows only: a confound between the two). The reference view (its own pass or cache) then runs over
``max_length`` by up to the extra length of its prompt; such rows are counted
(``TruncationReport.reference_views_over``, by at most ``reference_overrun_max`` tokens) and logged. A row
whose policy prompt leaves no room for a response token is dropped and counted. Left truncation can cut the
reference view's change (E-RLHF's safety prefix opens the last user turn, so a long turn pushes it out, and the
reference may then see the policy's prompt): such rows are kept as cut, as TRL's keep-end truncation would, and counted
(``TruncationReport.reference_prefixes_cut``) with a warning to raise ``max_prompt_length``. A reference view
that alone exceeds the limit loses its start instead (the chat header, a system prompt) while the policy view
keeps it; such rows are kept as cut too and counted apart (``reference_heads_cut``), with the same warning.

Joint log-probs (``joint_logps=True``, for losses over log π(x, y) such as JPO; docs/loss-inputs.md):
each side's own prompt (a pair may answer two prompts, ``PreferencePair.rejected_prompt``) is rendered
and tokenized, its response ids appended as above, and every token after the first is scored: the
encoded pair keeps the shared first token as its "prompt" and the rest of each sequence as its
"response", so collation, reference caching and log-prob code work unchanged on cross-prompt pairs.
A prompt longer than ``max_prompt_length`` keeps that shared first token and its end. Without
``joint_logps`` a cross-prompt pair is refused (its two sides have no common prompt).

Answers cut at the generation limit (``chosen_cut``/``rejected_cut`` in a pair's ``meta``, written by
self-generated safety pairs built with ``cut_answers=open``; safealign/data/safety_pairs.py): such a side is
the rendered assistant turn up to the end of its own text, without the template's end-of-turn tokens, so
training does not teach the model to stop where generation was cut. Rows without the flags encode as before.

Assistant prefixes (``PreferencePair.response_prefix``, from the recovery/derta data transforms;
docs/safety-training.md): the prefix text is tokenized on its own and appended to both prompt views, and
each response is the template's rendering of ``prefix + response`` with the prefix cut off, tokenized once.
It counts toward ``max_length`` (not ``max_prompt_length``) and is never scored. Transition rows
(``chosen_target_refusal``) carry ``chosen_target_ids``: the refusal's first token at every chosen position
(the first token of the refusal text itself, after any text the template puts before an assistant turn's
content, such as Qwen3's empty ``<think>`` block), their chosen ids ending at the first end-of-turn token
(ChatML's ``<|im_end|>``, without the ``\n`` after it).

Tokenizers without a chat template raise a UserError naming the fix: pass ``chat_template=`` (e.g.
:data:`safealign.models.tiny.CHATML_TEMPLATE`). No silent fallback — a wrong template trains a
different prompt format than the model will see at inference.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from jinja2 import TemplateError
from tqdm.auto import tqdm

from safealign.data.transforms import IdentityTransform, PromptTransform
from safealign.errors import UserError
from safealign.types import Message, PreferencePair, UnpairedExample

log = logging.getLogger(__name__)

Ids = tuple[int, ...]


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair. ``ref_prompt_ids`` is None when the reference sees the policy prompt."""

    index: int
    prompt_ids: Ids
    ref_prompt_ids: Ids | None
    chosen_ids: Ids
    rejected_ids: Ids
    harmful: bool | None
    chosen_scores: tuple[float, ...] | None = None  # PreferencePair.chosen_scores, passed through
    chosen_safe: bool | None = None  # PreferencePair's safety labels, passed through (SafeDPO)
    rejected_safe: bool | None = None
    # DeRTa's transition rows: the token each chosen position is trained to predict (instead of chosen_ids)
    chosen_target_ids: Ids | None = None
    # where the row came from (PreferencePair.source/row), for messages: ``index`` is a position, not a data row
    source: str = field(default="", compare=False)
    row: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class EncodedUnpaired:
    """Token ids of one unpaired example (KTO/BCO)."""

    index: int
    prompt_ids: Ids
    ref_prompt_ids: Ids | None
    completion_ids: Ids
    label: bool
    harmful: bool | None
    source: str = field(default="", compare=False)  # UnpairedExample.source/row, for messages
    row: int = field(default=-1, compare=False)


@dataclass(frozen=True)
class TruncationReport:
    """What truncation did: examples seen, prompts left-truncated (policy or reference view),
    responses cut (chosen and rejected counted separately), indices dropped as too long, and rows whose
    reference view lost (part of) what the transform changed, E-RLHF's safety prefix, to left truncation."""

    examples: int
    prompts_truncated: int
    responses_truncated: int
    dropped: tuple[int, ...] = ()
    reference_prefixes_cut: int = 0
    # rows whose reference view alone lost leading ids (the chat header, a system prompt) to left truncation,
    # the transform's change intact: the longer reference view exceeds max_prompt_length where the policy's fits
    reference_heads_cut: int = 0
    # rows whose reference view (prompt + longer response) exceeds max_length: the responses are budgeted by the
    # policy view, so a longer (prefixed) reference prompt runs over; by at most reference_overrun_max tokens
    reference_views_over: int = 0
    reference_overrun_max: int = 0
    # rows with a response rendered as response + eos_token: the chat template does not render the prompt as a
    # prefix of prompt + response, so the template's own assistant turn is not what trains
    template_fallbacks: int = 0

    @classmethod
    def total(cls, reports: Sequence[TruncationReport]) -> TruncationReport:
        """Several encodings' reports as one (every count summed, the largest overrun kept; dropped indices are per
        encoding: left out)."""
        counts = [f.name for f in dataclasses.fields(cls) if f.name not in ("dropped", "reference_overrun_max")]
        summed = {name: sum(getattr(r, name) for r in reports) for name in counts}
        return cls(**summed, reference_overrun_max=max((r.reference_overrun_max for r in reports), default=0))

    def summary(self) -> str:
        text = (
            f"{self.examples} examples: {self.prompts_truncated} prompts left-truncated, "
            f"{self.responses_truncated} responses cut, {len(self.dropped)} dropped "
            "(prompt leaves no room for a response)"
        )
        if self.reference_prefixes_cut:
            text += (f"; {self.reference_prefixes_cut} rows lost (part of) their reference-view safety prefix to "
                     "left truncation (the reference sees less or none of it): raise max_prompt_length")
        if self.reference_heads_cut:
            text += (f"; {self.reference_heads_cut} rows' reference view lost its start (chat header, system "
                     "prompt) to left truncation while the policy view kept it: raise max_prompt_length")
        if self.reference_views_over:
            text += (f"; {self.reference_views_over} rows' reference view runs over max_length by up to "
                     f"{self.reference_overrun_max} tokens (responses are cut to fit the policy view, as without "
                     "a reference view; the reference scores the same response tokens after its longer prompt)")
        if self.template_fallbacks:
            text += (f"; {self.template_fallbacks} of {self.examples} rows' responses are response + eos_token: the "
                     "chat template does not render the prompt as a prefix of prompt + response")
        return text


class PromptTooLong(ValueError):
    """The prompt leaves no room for a single response token within ``max_length``."""


@dataclass
class _Counts:
    prompts: int = 0
    responses: int = 0
    prefixes_cut: int = 0
    heads_cut: int = 0
    reference_over: int = 0  # rows whose reference view exceeds max_length
    overrun_max: int = 0  # by how many tokens at most
    fallbacks: int = 0  # responses rendered as response + eos_token (PairEncoder.render_response's fallback)


def reference_overrun_of(ref_ids: Ids, responses: Sequence[Ids], max_length: int) -> int:
    """Tokens by which a reference view (its prompt + the longest of ``responses``) runs over ``max_length``
    (0 or less: it fits)."""
    return len(ref_ids) + max(map(len, responses)) - max_length


class PairEncoder:
    """Encode :class:`PreferencePair` / :class:`UnpairedExample` items into token ids."""

    def __init__(
        self,
        tokenizer: Any,
        transform: PromptTransform | None = None,
        max_length: int = 512,
        max_prompt_length: int | None = 256,
        chat_template: str | None = None,
        joint_logps: bool = False,
    ) -> None:
        if max_prompt_length is not None and not 0 < max_prompt_length < max_length:
            raise UserError(
                f"max_prompt_length ({max_prompt_length}) must be positive and below max_length ({max_length})"
            )
        if chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise UserError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no chat template; "
                "pass chat_template= (a Jinja template, e.g. safealign.models.tiny.CHATML_TEMPLATE for ChatML) "
                "or use the chat/instruct variant of the model's tokenizer"
            )
        if joint_logps and transform is not None and not transform.is_identity:
            raise UserError("joint log-probs score the prompt tokens, so the reference must see the policy's "
                             f"prompt; got prompt transform {transform.key()}")
        self.joint_logps = joint_logps
        self.tokenizer = tokenizer
        self.transform = transform or IdentityTransform()
        self.max_length = max_length
        self.max_prompt_length = max_prompt_length
        self.chat_template = chat_template
        self._warned_fallback = False

    # ----------------------------------------------------------------------- rendering
    def render_prompt(self, prompt: tuple[Message, ...]) -> str:
        """The prompt as the template renders it, ending with the assistant generation header."""
        return self._render(list(prompt), add_generation_prompt=True)

    def render_response(self, prompt: tuple[Message, ...], response: str) -> str:
        """The text the template adds after the rendered prompt for an assistant turn ``response``."""
        return self._render_response(prompt, response)[0]

    def _render_response(self, prompt: tuple[Message, ...], response: str) -> tuple[str, bool]:
        """:meth:`render_response`, and whether it is the ``response + eos_token`` fallback (counted per row)."""
        # Everything the template adds is the response, so its whole end-of-turn text is scored: on ChatML
        # (SmolLM2, Qwen) "<|im_end|>" and then "\n", one token past where the model stops (generation ends at
        # <|im_end|>; the "\n" is template text before the next turn, never generated). That token is near-certain
        # and sits in every response, policy's and reference's alike: it adds about 0 to summed log-probs (DPO's
        # margin) but 1 to each length |y|, so per-token averages (simpo, orpo, sft, cpo/rpo's NLL term, ipo's
        # default length_normalize, dil, poft) and per-token NLLs are pulled towards 0 by about |y|/(|y|+1) -- most
        # on short answers. TRL's conversational split (prompt+completion rendered, prompt cut off) keeps the same
        # token; tests/train/test_trl_trainer_crosscheck.py pins the identical ids. Kept on purpose: changing it
        # changes every run's token ids and reference-cache keys (docs/trl-differences.md, "Response tokens").
        rendered_prompt = self.render_prompt(prompt)
        full = self._render([*prompt, {"role": "assistant", "content": response}], add_generation_prompt=False)
        if full.startswith(rendered_prompt) and len(full) > len(rendered_prompt):
            return full[len(rendered_prompt) :], False
        if not self._warned_fallback:
            log.warning(
                "chat template does not render the prompt as a prefix of prompt+response; using response + eos_token"
            )
            self._warned_fallback = True
        return response + (self.tokenizer.eos_token or ""), True

    def _render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=self.chat_template
        )

    def _ids(self, text: str) -> Ids:
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ----------------------------------------------------------------------- encoding
    def encode(self, pair: PreferencePair, index: int) -> EncodedPair:
        """Encode one pair (``index`` is its position in the data set, kept for cache lookups)."""
        return self._encode_pair(pair, index, _Counts())

    def encode_unpaired(self, example: UnpairedExample, index: int) -> EncodedUnpaired:
        return self._encode_unpaired(example, index, _Counts())

    def encode_all(self, pairs: Iterable[PreferencePair]) -> tuple[list[EncodedPair], TruncationReport]:
        """Encode every pair; index = position in ``pairs``. Too-long prompts are dropped and counted."""
        return self._encode_many(list(pairs), self._encode_pair)

    def encode_all_unpaired(
        self, examples: Iterable[UnpairedExample]
    ) -> tuple[list[EncodedUnpaired], TruncationReport]:
        return self._encode_many(list(examples), self._encode_unpaired)

    def _encode_many(self, items: list, encode_one) -> tuple[list, TruncationReport]:
        counts, encoded, dropped, fallback_rows = _Counts(), [], [], 0
        for index, item in enumerate(tqdm(items, desc="tokenizing", disable=len(items) < 2000)):
            fallbacks = counts.fallbacks
            try:
                encoded.append(encode_one(item, index, counts))
            except PromptTooLong as exc:
                log.debug("%s", exc)
                dropped.append(index)
            fallback_rows += counts.fallbacks > fallbacks  # rows, not responses
        report = TruncationReport(len(items), counts.prompts, counts.responses, tuple(dropped), counts.prefixes_cut,
                                  counts.heads_cut, counts.reference_over, counts.overrun_max, fallback_rows)
        (log.warning if counts.prompts or counts.responses or dropped or counts.reference_over or fallback_rows
         else log.info)("tokenization: %s", report.summary())
        return encoded, report

    def _encode_pair(self, pair: PreferencePair, index: int, counts: _Counts) -> EncodedPair:
        if self.joint_logps:
            return self._encode_joint(pair, index, counts)
        if pair.rejected_prompt is not None:
            raise UserError(f"{pair.source} row {pair.row}: chosen and rejected answer different prompts; only a "
                             "loss over joint log-probs (jpo) can score such a pair (docs/loss-inputs.md)")
        prompt_ids, ref_ids = self._prompt_views(pair.prompt, pair.harmful, pair, counts)
        prefix = pair.response_prefix
        if prefix:  # an assistant turn already begun: its tokens join both prompt views, never scored
            prefix_ids = self._ids(prefix)
            prompt_ids, ref_ids = prompt_ids + prefix_ids, (ref_ids + prefix_ids if ref_ids is not None else None)
        budget = self._response_budget(prompt_ids, pair)
        chosen = self._response_ids(pair.prompt, pair.chosen, budget, counts, pair, prefix,
                                    open_end=pair.meta.get("chosen_cut") is True)
        rejected = self._response_ids(pair.prompt, pair.rejected, budget, counts, pair, prefix,
                                      open_end=pair.meta.get("rejected_cut") is True)
        targets = None
        if pair.chosen_target_refusal is not None:  # DeRTa RTO: the refusal's first token at every position
            chosen = self._through_end_of_turn(pair.prompt, pair.chosen, chosen, pair)
            targets = self._first_content_token(pair.prompt, pair.chosen_target_refusal, pair) * len(chosen)
        self._count_reference_overrun(ref_ids, (chosen, rejected), counts)
        return EncodedPair(index, prompt_ids, ref_ids, chosen, rejected, pair.harmful, pair.chosen_scores,
                           pair.chosen_safe, pair.rejected_safe, targets, source=pair.source, row=pair.row)

    def _encode_joint(self, pair: PreferencePair, index: int, counts: _Counts) -> EncodedPair:
        """Each side as its own prompt + response; all but the shared first token are scored."""
        if pair.response_prefix or pair.chosen_target_refusal is not None:
            raise UserError(f"{pair.source} row {pair.row}: a row with an assistant prefix or transition targets "
                            "(data transforms recovery/derta) cannot be scored as joint log-probs")
        sides = []
        for prompt, response, side in ((pair.prompt, pair.chosen, "chosen"),
                                       (pair.rejected_prompt or pair.prompt, pair.rejected, "rejected")):
            full = self._guarded(pair, lambda: self._ids(self.render_prompt(prompt)))  # noqa: B023 (called now)
            prompt_ids = self._left_truncate(full, keep_first=True)  # the shared, unscored first token stays
            counts.prompts += int(prompt_ids != full)
            budget = self._response_budget(prompt_ids, pair)
            sides.append(prompt_ids + self._response_ids(prompt, response, budget, counts, pair,
                                                         open_end=pair.meta.get(f"{side}_cut") is True))
        if sides[0][:1] != sides[1][:1]:
            raise UserError(f"{pair.source} row {pair.row}: the two rendered prompts start with different tokens "
                             f"({sides[0][:1]} vs {sides[1][:1]}); joint log-probs need a common first token")
        return EncodedPair(index, sides[0][:1], None, sides[0][1:], sides[1][1:], pair.harmful, pair.chosen_scores,
                           source=pair.source, row=pair.row)

    def _encode_unpaired(self, example: UnpairedExample, index: int, counts: _Counts) -> EncodedUnpaired:
        prompt_ids, ref_ids = self._prompt_views(example.prompt, example.harmful, example, counts)
        budget = self._response_budget(prompt_ids, example)
        # an example split from a pair (data.unpair) keeps the pair's meta: its label says which side it was
        cut = example.meta.get("chosen_cut" if example.label else "rejected_cut") is True
        completion = self._response_ids(example.prompt, example.completion, budget, counts, example, open_end=cut)
        self._count_reference_overrun(ref_ids, (completion,), counts)
        return EncodedUnpaired(index, prompt_ids, ref_ids, completion, example.label, example.harmful,
                               source=example.source, row=example.row)

    def _prompt_views(self, prompt, harmful, item, counts: _Counts) -> tuple[Ids, Ids | None]:
        """(policy prompt ids, reference prompt ids or None when the transform leaves it unchanged)."""
        policy = self._guarded(item, lambda: self._ids(self.render_prompt(prompt)))
        ref_prompt = self.transform(prompt, harmful)
        ref = None
        if ref_prompt is not prompt and ref_prompt != prompt:
            ref = self._guarded(item, lambda: self._ids(self.render_prompt(ref_prompt)))
            ref = None if ref == policy else ref
        policy_cut, ref_cut = self._left_truncate(policy), self._left_truncate(ref) if ref is not None else None
        counts.prompts += int(policy_cut != policy or (ref is not None and ref_cut != ref))
        if ref is not None:
            removed = len(ref) - len(ref_cut)
            changed = _cuts_the_change(policy, ref, removed)
            counts.prefixes_cut += int(changed)
            # the views then differ by more than the transform: the reference lacks a start the policy sees
            counts.heads_cut += int(not changed and removed > len(policy) - len(policy_cut))
        return policy_cut, ref_cut

    def _left_truncate(self, ids: Ids, keep_first: bool = False) -> Ids:
        """The last ``max_prompt_length`` ids (with ``keep_first``, the first id and the last ones after it)."""
        limit = self.max_prompt_length
        if limit is None or len(ids) <= limit:
            return ids
        head = ids[:1] if keep_first else ()
        return head + ids[len(ids) - (limit - len(head)):]

    def _response_budget(self, prompt_ids: Ids, item) -> int:
        """Room for a response beside the POLICY prompt: what the policy trains on does not depend on the
        reference view (E-DPO keeps DPO's response tokens; the reference view may run over max_length)."""
        budget = self.max_length - len(prompt_ids)
        if budget < 1:
            raise PromptTooLong(
                f"{item.source} row {item.row}: prompt of {len(prompt_ids)} tokens leaves no room "
                f"within max_length={self.max_length}"
            )
        return budget

    def _count_reference_overrun(self, ref_ids: Ids | None, responses: Sequence[Ids], counts: _Counts) -> None:
        """Count a reference view (its prompt + the longest response) that runs over ``max_length``."""
        if ref_ids is None:
            return
        over = reference_overrun_of(ref_ids, responses, self.max_length)
        if over > 0:
            counts.reference_over += 1
            counts.overrun_max = max(counts.overrun_max, over)

    def _response_ids(self, prompt, response: str, budget: int, counts: _Counts, item, prefix: str = "",
                      open_end: bool = False) -> Ids:
        """Ids of the assistant text after ``prefix`` (the template's end-of-turn included, unless ``open_end``:
        an answer cut at the generation limit, whose end must not be learnt as a stop), cut to ``budget``."""
        text = self._guarded(item, lambda: self._continuation(prompt, response, prefix, item, counts))
        ids = self._ids(_without_end_of_turn(text, response, item) if open_end else text)
        if len(ids) > budget:
            counts.responses += 1
            return ids[:budget]
        return ids

    def _continuation(self, prompt, response: str, prefix: str, item, counts: _Counts) -> str:
        rendered, fell_back = self._render_response(prompt, prefix + response)
        counts.fallbacks += int(fell_back)
        if not rendered.startswith(prefix):
            raise UserError(f"{item.source} row {item.row}: the chat template changes the assistant text, so the "
                            f"response cannot continue the prefix {prefix[:40]!r}")
        return rendered[len(prefix):]

    def _through_end_of_turn(self, prompt, response: str, ids: Ids, item) -> Ids:
        """``ids`` (``response`` as an assistant turn) through its first end-of-turn token: the first token of what
        the template renders after the response's own text (ChatML's ``<|im_end|>``), or the tokenizer's eos.

        DeRTa's transition positions stop there, as the released script's labels stop at its EOS: the template
        text after it (ChatML's "\\n", never generated) would add a position trained to predict the refusal after
        the turn has ended. Ids without one (cut at ``max_length``, or an answer cut at the generation limit) are
        kept whole."""
        rendered = self._guarded(item, lambda: self.render_response(prompt, response))
        text = response.strip()
        found = rendered.rfind(text) if text else -1
        ends, start = {self.tokenizer.eos_token_id} - {None}, 0
        if found >= 0:  # else (the template changed the text) the tokenizer's eos alone
            own_end = found + len(text)
            ends.update(self._ids(rendered[own_end:].lstrip())[:1])
            start = max(0, len(self._ids(rendered[:own_end])) - 1)  # not a token of the response's own text
        end = next((i for i in range(start, len(ids)) if ids[i] in ends), None)
        return ids if end is None else ids[: end + 1]

    def _first_content_token(self, prompt, text: str, item) -> Ids:
        """The first token of ``text`` itself in an assistant turn: the rendered response from where the text
        starts (after anything the template puts first, e.g. Qwen3's ``<think>\\n\\n</think>\\n\\n``)."""
        rendered, start = self._content_start(prompt, text, item)
        return self._ids(rendered[start:])[:1]

    def text_before_content(self, prompt, text: str, item) -> str:
        """What the chat template renders before ``text`` in an assistant turn answering ``prompt``: "" for most
        templates, Qwen3's empty ``<think>`` block for Qwen3's. ``item`` (source, row) names the row in errors."""
        rendered, start = self._content_start(prompt, text, item)
        return rendered[:start]

    def _content_start(self, prompt, text: str, item) -> tuple[str, int]:
        """The rendered assistant turn and where ``text`` starts in it."""
        rendered = self._guarded(item, lambda: self.render_response(prompt, text))
        start = rendered.find(text)
        start = start if start >= 0 else rendered.find(text.strip())  # a template may strip the content
        if start < 0:
            raise UserError(
                f"{item.source} row {item.row}: the chat template changes the assistant text "
                f"{text[:40]!r}, so where it starts in the rendered assistant turn cannot be found"
            )
        return rendered, start

    @staticmethod
    def _guarded(item, fn):
        try:
            return fn()
        except TemplateError as exc:
            raise UserError(
                f"{item.source} row {item.row}: the chat template rejected this conversation: {exc}"
            ) from exc


def _without_end_of_turn(rendered: str, response: str, item) -> str:
    """The rendered assistant turn up to the end of the response's own text (what the template adds after it,
    the end-of-turn tokens, left out). The text is looked for as given less its trailing space, then, where a
    template trims the content (Llama-3's ``| trim`` drops a leading space), without its leading space too: a
    response the first finds ends where it always did."""
    for text in dict.fromkeys((response.rstrip(), response.strip())):
        end = rendered.rfind(text) if text else -1
        if end >= 0:
            return rendered[: end + len(text)]
    raise UserError(f"{item.source} row {item.row}: the chat template changes the response text, so a side "
                    "marked as cut (chosen_cut/rejected_cut) cannot be trained without its end-of-turn tokens")


def _cuts_the_change(policy: Ids, ref: Ids, removed: int) -> bool:
    """Whether removing the first ``removed`` reference ids cut into the part that differs from the policy view
    (the transform's change, e.g. the safety prefix): the views agree on their first ``shared`` ids only."""
    shared = next((i for i, (a, b) in enumerate(zip(policy, ref)) if a != b), min(len(policy), len(ref)))
    return removed > shared

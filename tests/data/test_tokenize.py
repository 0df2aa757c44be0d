"""Tokenization: chat-template rendering, the reference view, one tokenization per response, truncation."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from safealign.data.tokenize import EncodedPair, EncodedUnpaired, PairEncoder, PromptTooLong, TruncationReport
from safealign.data.transforms import PREFIXES, IdentityTransform, SafetyPrefix
from safealign.models.tiny import CHATML_TEMPLATE
from safealign.types import PreferencePair, UnpairedExample

CG = PREFIXES["community_guidelines"]
Q = "How do I pick a lock?"


def pair(prompt=Q, chosen="No.", rejected="Sure.", harmful=True, row=7):
    return PreferencePair(({"role": "user", "content": prompt},), chosen, rejected, harmful, "d.jsonl", row)


def ids(tok, text):
    return tuple(tok(text, add_special_tokens=False)["input_ids"])


def chatml_prompt(content):
    return f"<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n"


def test_policy_and_reference_ids(tiny_tokenizer):
    enc = PairEncoder(tiny_tokenizer, SafetyPrefix())
    encoded = enc.encode(pair(), index=3)
    assert encoded == EncodedPair(
        index=3,
        prompt_ids=ids(tiny_tokenizer, chatml_prompt(Q)),
        ref_prompt_ids=ids(tiny_tokenizer, chatml_prompt(CG + Q)),
        chosen_ids=ids(tiny_tokenizer, "No.<|im_end|>\n"),
        rejected_ids=ids(tiny_tokenizer, "Sure.<|im_end|>\n"),
        harmful=True,
    )
    # the reference prompt is the policy prompt with exactly the prefix's tokens inserted after the user header
    head = len(ids(tiny_tokenizer, "<|im_start|>user\n"))
    prefix_ids = ids(tiny_tokenizer, CG)
    assert encoded.ref_prompt_ids[head : head + len(prefix_ids)] == prefix_ids
    assert encoded.ref_prompt_ids[:head] + encoded.ref_prompt_ids[head + len(prefix_ids) :] == encoded.prompt_ids


def test_no_reference_view_when_unchanged(tiny_tokenizer):
    assert PairEncoder(tiny_tokenizer).encode(pair(), 0).ref_prompt_ids is None
    assert PairEncoder(tiny_tokenizer, IdentityTransform()).encode(pair(), 0).ref_prompt_ids is None
    prefixed = PairEncoder(tiny_tokenizer, SafetyPrefix())
    assert prefixed.encode(pair(harmful=False), 0).ref_prompt_ids is None
    assert prefixed.encode(pair(harmful=None), 0).ref_prompt_ids is None


class SpyTokenizer:
    """Records every text tokenized, to prove responses are tokenized once and never joined to a prompt."""

    def __init__(self, inner):
        self.inner, self.texts = inner, []
        self.chat_template, self.eos_token = inner.chat_template, inner.eos_token

    def apply_chat_template(self, *args, **kwargs):
        return self.inner.apply_chat_template(*args, **kwargs)

    def __call__(self, text, **kwargs):
        self.texts.append(text)
        return self.inner(text, **kwargs)


def test_each_response_is_tokenized_once_alone(tiny_tokenizer):
    spy = SpyTokenizer(tiny_tokenizer)
    PairEncoder(spy, SafetyPrefix()).encode(pair(), 0)
    assert spy.texts == [chatml_prompt(Q), chatml_prompt(CG + Q), "No.<|im_end|>\n", "Sure.<|im_end|>\n"]


def test_multi_turn_prompt_rendering(tiny_tokenizer):
    prompt = ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"})
    enc = PairEncoder(tiny_tokenizer)
    assert enc.render_prompt(
        prompt
    ) == "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n" + chatml_prompt("c")
    assert enc.render_response(prompt, "d") == "d<|im_end|>\n"


def test_missing_chat_template(tiny_tokenizer):
    from safealign.models.tiny import tiny_tokenizer as make

    bare = make()
    bare.chat_template = None
    with pytest.raises(
        ValueError,
        match=r"has no chat template; pass chat_template= \(a Jinja template, "
        r"e\.g\. safealign\.models\.tiny\.CHATML_TEMPLATE",
    ):
        PairEncoder(bare)
    encoded = PairEncoder(bare, chat_template=CHATML_TEMPLATE).encode(pair(), 0)
    assert encoded.prompt_ids == ids(tiny_tokenizer, chatml_prompt(Q))


def test_fallback_when_prompt_is_not_a_prefix(tiny_tokenizer, caplog):
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT>' }}{% endif %}"
    )
    enc = PairEncoder(tiny_tokenizer, chat_template=template)
    with caplog.at_level(logging.WARNING):
        encoded = enc.encode(pair(), 0)
    assert encoded.prompt_ids == ids(tiny_tokenizer, f"user: {Q}\nASSISTANT>")
    assert encoded.chosen_ids == ids(tiny_tokenizer, "No.<|im_end|>")
    assert "using response + eos_token" in caplog.text


def test_template_error_names_row(tiny_tokenizer):
    template = "{{ raise_exception('Conversation roles must alternate') }}"
    with pytest.raises(
        ValueError,
        match=r"d\.jsonl row 7: the chat template rejected this conversation: Conversation roles must alternate",
    ):
        PairEncoder(tiny_tokenizer, chat_template=template).encode(pair(), 0)


def test_truncation_keeps_prompt_end_and_response_start(tiny_tokenizer, caplog):
    long_prompt = "x" * 40 + Q
    full_prompt = ids(tiny_tokenizer, chatml_prompt(long_prompt))
    full_chosen = ids(tiny_tokenizer, "A long refusal.<|im_end|>\n")
    enc = PairEncoder(tiny_tokenizer, max_length=30, max_prompt_length=20)
    with caplog.at_level(logging.WARNING):
        encoded, report = enc.encode_all(
            [
                pair(prompt=long_prompt, chosen="A long refusal.", rejected="Ok"),
                pair(prompt="hi", chosen="y", rejected="n"),
            ]
        )
    first = encoded[0]
    assert first.prompt_ids == full_prompt[-20:]
    assert first.chosen_ids == full_chosen[:10]
    assert first.rejected_ids == ids(tiny_tokenizer, "Ok<|im_end|>\n")  # 5 tokens: fits
    assert encoded[1].index == 1 and encoded[1].prompt_ids == ids(tiny_tokenizer, chatml_prompt("hi"))[-20:]  # 21 → 20
    assert report == TruncationReport(examples=2, prompts_truncated=2, responses_truncated=1, dropped=())
    assert "2 prompts left-truncated, 1 responses cut, 0 dropped" in caplog.text


def test_response_budget_follows_the_policy_prompt_as_plain_dpo_does(tiny_tokenizer, caplog):
    """A binding E-row keeps the responses plain DPO keeps (no confound between DPO and E-DPO at one max_length);
    the prefixed reference view runs over max_length by the prefix's extra tokens, and the report says so."""
    rows = [pair(chosen="c" * 40, rejected="r"), pair(prompt="q" * 30), pair(harmful=False, chosen="c" * 40)]
    e_dpo = PairEncoder(tiny_tokenizer, SafetyPrefix(prefix="PREFIX "), max_length=50, max_prompt_length=None)
    with caplog.at_level(logging.WARNING):
        encoded, report = e_dpo.encode_all(rows)
    plain, plain_report = PairEncoder(tiny_tokenizer, max_length=50, max_prompt_length=None).encode_all(rows)
    # byte-level tokens: 1 + len("user\n") + 21 + 1 + 1 + 1 + len("assistant\n") = 40; the prefix adds 7
    first = encoded[0]
    assert len(first.prompt_ids) == 40 and len(first.ref_prompt_ids) == 47
    assert first.chosen_ids == ids(tiny_tokenizer, "c" * 10)  # 50 - 40, the policy view's budget
    assert [(e.prompt_ids, e.chosen_ids, e.rejected_ids) for e in encoded] == [
        (e.prompt_ids, e.chosen_ids, e.rejected_ids) for e in plain]
    # row 1: a 49-token policy prompt fits with 1 response token; its 56-token reference prompt alone does not fit
    # max_length, and the row is kept (plain DPO keeps it) rather than dropped
    assert [e.index for e in encoded] == [0, 1, 2] and len(encoded[1].chosen_ids) == 1
    assert report.dropped == plain_report.dropped == ()
    assert report.responses_truncated == plain_report.responses_truncated == 4
    assert (report.reference_views_over, report.reference_overrun_max) == (2, 7)
    assert (plain_report.reference_views_over, plain_report.reference_overrun_max) == (0, 0)
    assert "2 rows' reference view runs over max_length by up to 7 tokens" in caplog.text
    # a model with 50 positions cannot score a 57-token reference view: refused before anything runs, naming the fix
    from types import SimpleNamespace

    from safealign.errors import UserError
    from safealign.train.data import check_reference_fits

    with pytest.raises(UserError, match=r"reference views run to 57 tokens .* context of 50 positions: set "
                                        r"max_length to 43 or less"):
        check_reference_fits(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=50)), 50, report)
    check_reference_fits(SimpleNamespace(config=SimpleNamespace(n_positions=57)), 50, report)  # fits exactly
    check_reference_fits(SimpleNamespace(config=SimpleNamespace(max_position_embeddings=50)), 50, plain_report)


def test_rows_that_fit_encode_as_before(tiny_tokenizer):
    """Demo-like rows (built-in harmful prompts, built-in refusals as chosen; a benign row) where nothing binds keep
    exactly the ids of their untruncated views, up to the row whose reference view fills max_length exactly."""
    from safealign.data.builtin import load_prompts, load_refusals

    refusals = load_refusals()
    rows = [pair(prompt=p.prompt, chosen=refusals[i], rejected="Sure, here is how. Step one: ...", row=i)
            for i, p in enumerate(load_prompts("harmful")[:6])]
    rows.append(pair(prompt="Bake bread?", chosen="Mix flour and water.", rejected=refusals[0], harmful=False))

    def full(row):
        content = row.prompt[0]["content"]
        prompt = ids(tiny_tokenizer, chatml_prompt(content))
        ref = ids(tiny_tokenizer, chatml_prompt(CG + content)) if row.harmful else None
        return EncodedPair(row.row, prompt, ref, ids(tiny_tokenizer, row.chosen + "<|im_end|>\n"),
                           ids(tiny_tokenizer, row.rejected + "<|im_end|>\n"), row.harmful)

    expected = [dataclasses.replace(full(row), index=i) for i, row in enumerate(rows)]
    tightest = max(len(e.ref_prompt_ids or e.prompt_ids) + max(len(e.chosen_ids), len(e.rejected_ids))
                   for e in expected)
    encoded, report = PairEncoder(tiny_tokenizer, SafetyPrefix(), max_length=tightest,
                                  max_prompt_length=tightest - 1).encode_all(rows)
    assert encoded == expected
    assert report == TruncationReport(len(rows), 0, 0, ())


def test_prompts_that_cannot_fit_are_dropped_and_counted(tiny_tokenizer):
    enc = PairEncoder(tiny_tokenizer, max_length=30, max_prompt_length=None)
    encoded, report = enc.encode_all([pair(prompt="a" * 30), pair(prompt="b")])
    assert [e.index for e in encoded] == [1]
    assert report.dropped == (0,) and report.examples == 2
    with pytest.raises(PromptTooLong, match=r"d\.jsonl row 7: prompt of 49 tokens leaves no room within max_length=30"):
        enc.encode(pair(prompt="a" * 30), 0)
    with pytest.raises(ValueError, match=r"max_prompt_length \(20\) must be positive and below max_length \(20\)"):
        PairEncoder(tiny_tokenizer, max_length=20, max_prompt_length=20)


def test_encode_unpaired(tiny_tokenizer):
    example = UnpairedExample(({"role": "user", "content": Q},), "No.", False, True, "u.jsonl", 0)
    enc = PairEncoder(tiny_tokenizer, SafetyPrefix())
    assert enc.encode_unpaired(example, 5) == EncodedUnpaired(
        5,
        ids(tiny_tokenizer, chatml_prompt(Q)),
        ids(tiny_tokenizer, chatml_prompt(CG + Q)),
        ids(tiny_tokenizer, "No.<|im_end|>\n"),
        False,
        True,
    )
    encoded, report = enc.encode_all_unpaired([example])
    assert encoded[0].index == 0 and report == TruncationReport(1, 0, 0, ())


# --------------------------------------------------------------------------- joint log-probs (JPO)
def test_joint_encoding_scores_each_side_with_its_own_prompt(tiny_tokenizer):
    cross = PreferencePair((user("A?"),), "Yes.", "No.", None, "d.jsonl", 2, rejected_prompt=(user("Bee?"),),
                           chosen_scores=(-1.0,))
    encoded = PairEncoder(tiny_tokenizer, joint_logps=True).encode(cross, index=0)
    chosen_full = ids(tiny_tokenizer, chatml_prompt("A?") + "Yes.<|im_end|>\n")
    rejected_full = ids(tiny_tokenizer, chatml_prompt("Bee?") + "No.<|im_end|>\n")
    assert encoded.prompt_ids == chosen_full[:1] == rejected_full[:1]  # the shared, unscored first token
    assert encoded.prompt_ids + encoded.chosen_ids == chosen_full
    assert encoded.prompt_ids + encoded.rejected_ids == rejected_full
    assert encoded.ref_prompt_ids is None and encoded.chosen_scores == (-1.0,)


def test_a_cross_prompt_pair_needs_joint_log_probs_and_joint_needs_the_identity_view(tiny_tokenizer):
    cross = PreferencePair((user("A?"),), "Yes.", "No.", None, "d.jsonl", 2, rejected_prompt=(user("B?"),))
    with pytest.raises(ValueError, match="d.jsonl row 2: chosen and rejected answer different prompts.*jpo"):
        PairEncoder(tiny_tokenizer).encode(cross, index=0)
    with pytest.raises(ValueError, match="joint log-probs score the prompt tokens.*safety_prefix"):
        PairEncoder(tiny_tokenizer, SafetyPrefix(), joint_logps=True)


def user(text):
    return {"role": "user", "content": text}


# --------------------------------------------------------------------------- truncation and the reference view
def test_a_safety_prefix_cut_by_left_truncation_is_counted_and_warned(tiny_tokenizer, caplog):
    long_turn = "y" * 200 + Q  # the prefix opens the last user turn; keeping the end cuts it off
    earlier = ({"role": "user", "content": "z" * 60}, {"role": "assistant", "content": "ok"})
    head_only = PreferencePair(earlier + (user(Q),), "No.", "Sure.", True, "d.jsonl", 2)  # cut before the prefix
    enc = PairEncoder(tiny_tokenizer, SafetyPrefix(), max_length=200, max_prompt_length=150)
    with caplog.at_level(logging.WARNING):
        encoded, report = enc.encode_all([pair(prompt=long_turn), pair(prompt=Q), head_only])
    # head_only's policy view fits; its reference view lost the header and part of the earlier turns instead
    assert report == TruncationReport(3, 2, 0, (), reference_prefixes_cut=1, reference_heads_cut=1)
    assert ("1 rows lost (part of) their reference-view safety prefix to left truncation (the reference sees less "
            "or none of it): raise max_prompt_length") in caplog.text
    # detection only: each view is its plain left truncation, as before; here the reference lost all of the prefix
    cut = encoded[0]
    assert cut.prompt_ids == ids(tiny_tokenizer, chatml_prompt(long_turn))[-150:]
    assert cut.ref_prompt_ids == ids(tiny_tokenizer, chatml_prompt(CG + long_turn))[-150:] == cut.prompt_ids
    assert encoded[1].ref_prompt_ids == ids(tiny_tokenizer, chatml_prompt(CG + Q))  # not truncated: unchanged
    prefix = ids(tiny_tokenizer, CG)
    kept = encoded[2].ref_prompt_ids
    assert any(kept[i:i + len(prefix)] == prefix for i in range(len(kept)))  # the cut stayed in the earlier turns


def test_a_reference_view_that_alone_loses_its_chat_header_is_counted_and_warned(tiny_tokenizer, caplog):
    """Only the prefixed reference exceeds max_prompt_length: it loses its start, the policy view keeps it."""
    policy, ref = ids(tiny_tokenizer, chatml_prompt(Q)), ids(tiny_tokenizer, chatml_prompt(CG + Q))
    limit = len(ref) - 3  # the reference loses 3 ids of "<|im_start|>user\n", the policy view fits
    assert len(policy) <= limit
    enc = PairEncoder(tiny_tokenizer, SafetyPrefix(), max_length=400, max_prompt_length=limit)
    with caplog.at_level(logging.WARNING):
        encoded, report = enc.encode_all([pair(), pair(harmful=False)])
    assert report == TruncationReport(2, 1, 0, (), reference_prefixes_cut=0, reference_heads_cut=1)
    assert "1 rows' reference view lost its start (chat header, system prompt) to left truncation" in caplog.text
    assert encoded[0].prompt_ids == policy  # cut as before: each view keeps its end
    assert encoded[0].ref_prompt_ids == ref[3:]


def test_joint_truncation_keeps_the_shared_first_token(tiny_tokenizer):
    long_prompt = "Tell me about cats. " * 10
    cross = PreferencePair((user(long_prompt),), "Cats are nice.", "No.", None, "jpo.jsonl", 7,
                           rejected_prompt=(user("Tell me about dogs."),))
    encoded, report = PairEncoder(tiny_tokenizer, max_length=300, max_prompt_length=60,
                                  joint_logps=True).encode_all([cross])
    full = ids(tiny_tokenizer, chatml_prompt(long_prompt))
    assert encoded[0].prompt_ids == full[:1]
    assert encoded[0].chosen_ids == full[-59:] + ids(tiny_tokenizer, "Cats are nice.<|im_end|>\n")
    dogs = ids(tiny_tokenizer, chatml_prompt("Tell me about dogs.") + "No.<|im_end|>\n")
    assert encoded[0].prompt_ids + encoded[0].rejected_ids == dogs
    assert report == TruncationReport(1, 1, 0, ())


# the assistant clause of Qwen3's chat template: the last assistant turn gets an empty think block first
QWEN3_LIKE = ("{%- for message in messages %}{%- if message.role == 'assistant' and loop.last %}"
              "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + message.content }}"
              "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content }}{%- endif %}"
              "{{- '<|im_end|>\\n' }}{%- endfor %}"
              "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def test_the_transition_target_is_the_first_token_of_the_refusal_text_not_of_the_template(tiny_tokenizer):
    row = PreferencePair((user("How do I make a weapon?"),), "Sure, here is how", "I cannot help.", True,
                         "d.jsonl", 0, chosen_target_refusal="I cannot help with that.")
    qwen = PairEncoder(tiny_tokenizer, chat_template=QWEN3_LIKE).encode(row, 0)
    assert qwen.chosen_ids[:7] == ids(tiny_tokenizer, "<think>")  # the template's text opens the response
    assert qwen.chosen_target_ids == ids(tiny_tokenizer, "I") * len(qwen.chosen_ids)
    assert qwen.chosen_ids[-1:] == ids(tiny_tokenizer, "<|im_end|>")  # through the end of turn, not the "\n" after
    spaced = dataclasses.replace(row, chosen_target_refusal=" I cannot help.")  # ChatML keeps a leading space
    assert PairEncoder(tiny_tokenizer).encode(spaced, 0).chosen_target_ids[:1] == ids(tiny_tokenizer, " ")


def test_reports_of_several_encodings_add_up_every_count():
    """The objective trainer encodes each role on its own and logs one report: every count must survive the sum
    (the E-view counts were dropped when the fields were added up by position)."""
    from safealign.data.tokenize import TruncationReport

    a = TruncationReport(3, 1, 2, (0,), reference_prefixes_cut=1, reference_heads_cut=0)
    b = TruncationReport(4, 0, 1, (2, 3), reference_prefixes_cut=2, reference_heads_cut=1)
    assert TruncationReport.total([a, b]) == TruncationReport(7, 1, 3, (), 3, 1)
    # rows whose reference view runs over max_length add up; by how many tokens at most is the larger of the two
    c = TruncationReport(2, 0, 0, reference_views_over=1, reference_overrun_max=7)
    d = TruncationReport(2, 0, 0, reference_views_over=2, reference_overrun_max=3)
    assert TruncationReport.total([c, d]) == TruncationReport(4, 0, 0, (), reference_views_over=3,
                                                              reference_overrun_max=7)


def test_a_cut_side_is_found_in_a_template_that_trims_the_content(tiny_tokenizer):
    """Llama-3-style templates write ``message['content'] | trim``: a cut answer " Sure, here" is rendered without
    its leading space, and the encoder still finds where its own text ends (the end-of-turn left out)."""
    trimmed = CHATML_TEMPLATE.replace("message['content']", "(message['content'] | trim)")
    row = dataclasses.replace(pair(chosen=" Sure, here", rejected="No."), meta={"chosen_cut": True})
    encoded = PairEncoder(tiny_tokenizer, chat_template=trimmed).encode(row, 0)
    assert encoded.chosen_ids == ids(tiny_tokenizer, "Sure, here")
    assert encoded.rejected_ids == ids(tiny_tokenizer, "No.<|im_end|>\n")
    # a template that keeps the space: the cut side ends where it did
    kept = PairEncoder(tiny_tokenizer).encode(row, 0)
    assert kept.chosen_ids == ids(tiny_tokenizer, " Sure, here")


def test_rows_rendered_by_the_template_fallback_are_counted_and_warned(tiny_tokenizer, caplog):
    """The response + eos fallback (the rendered prompt is no prefix of prompt + response) trains other tokens than
    the template would; each row it is used for is counted in the report (logged, and in the train summary)."""
    odd = (  # renders the last user turn differently once an assistant turn follows
        "{% for m in messages %}{% if m['role'] == 'user' and not loop.last %}{{ 'U> ' + m['content'] + '\n' }}"
        "{% else %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT>' }}{% endif %}"
    )
    with caplog.at_level(logging.WARNING):
        encoded, report = PairEncoder(tiny_tokenizer, chat_template=odd).encode_all([pair(), pair(chosen="Yes.")])
    assert report.template_fallbacks == 2
    assert [e.chosen_ids for e in encoded] == [ids(tiny_tokenizer, t + "<|im_end|>") for t in ("No.", "Yes.")]
    assert "2 of 2 rows" in caplog.text and "response + eos_token" in caplog.text
    assert "2 rows' responses are response + eos_token" in report.summary()
    _, report = PairEncoder(tiny_tokenizer).encode_all([pair()])
    assert report.template_fallbacks == 0 and "eos_token" not in report.summary()
    assert TruncationReport.total([TruncationReport(1, 0, 0, template_fallbacks=1),
                                   TruncationReport(2, 0, 0, template_fallbacks=2)]).template_fallbacks == 3

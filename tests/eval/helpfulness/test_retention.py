"""Answer retention (safealign.eval.helpfulness.retention) on the tiny random model."""

from __future__ import annotations

import pytest
import torch

from safealign.errors import UserError
from safealign.eval.helpfulness.retention import AnswerPair, answer_pairs, answer_retention, summarize_retention
from safealign.models.tiny import tiny_model, tiny_tokenizer

PAIRS = [AnswerPair("a", "How do I ask for a raise?", "Book a meeting and bring numbers.", "I'm struggling."),
         AnswerPair("b", "Substitute for eggs?", "Applesauce or a flax egg.", ""),
         AnswerPair("c", "Kill a Linux process?", "Run kill PID.", "Run kill -9 PID, then check ps.")]


def test_identical_models_retain_everything_exactly():
    model = tiny_model().eval()
    summary = answer_retention(model, model, tiny_tokenizer(), PAIRS)
    for stats in (summary.base_answers, summary.trained_answers):
        # every per-prompt difference is x − x = 0, so the mean and every bootstrap mean are exactly 0
        assert (stats.mean, stats.ci95, stats.n, stats.unscored) == (0.0, (0.0, 0.0), 3, 0)


def test_retention_is_the_mean_per_token_difference_of_the_two_models():
    base, trained = tiny_model().eval(), tiny_model().eval()
    with torch.no_grad():  # a different model: shift the output bias towards one token
        trained.lm_head.weight[5] += 0.5
    summary = answer_retention(base, trained, tiny_tokenizer(), PAIRS)
    from safealign.eval.helpfulness.retention import score_answers

    b, t = (score_answers(m, tiny_tokenizer(), PAIRS) for m in (base, trained))
    forward = [t["base_answers"][i] - b["base_answers"][i] for i in "abc"]
    reverse = [b["trained_answers"][i] - t["trained_answers"][i] for i in "abc"]
    assert summary.base_answers.mean == pytest.approx(sum(forward) / 3)
    assert summary.trained_answers.mean == pytest.approx(sum(reverse) / 3)
    assert summary.base_answers.mean != 0.0
    lo, hi = summary.base_answers.ci95
    # a bootstrap mean lies between the smallest and largest per-prompt value (up to float summation order)
    assert min(forward) - 1e-9 <= lo <= summary.base_answers.mean <= hi <= max(forward) + 1e-9 and lo < hi


def test_answer_pairs_skip_failed_generations_and_count_them_unscored():
    base = [{"id": "a", "prompt": "p", "completion": "x", "error": None},
            {"id": "b", "prompt": "q", "completion": "", "error": "boom"}]
    trained = [{"id": "a", "prompt": "p", "completion": "y", "error": None},
               {"id": "b", "prompt": "q", "completion": "z", "error": None}]
    assert answer_pairs(base, trained, ["a", "b", "c"]) == [AnswerPair("a", "p", "x", "y")]
    scores = {"base_answers": {"a": -1.0}, "trained_answers": {"a": -2.0}}
    trained_scores = {"base_answers": {"a": -1.5}, "trained_answers": {"a": -1.0}}
    summary = summarize_retention(scores, trained_scores, prompts=3)
    # base answers: −1.5 − (−1.0) = −0.5; trained answers: −2.0 − (−1.0) = −1.0 (base finds them less likely)
    assert summary.base_answers.mean == -0.5 and summary.trained_answers.mean == -1.0
    assert summary.base_answers.n == 1 and summary.base_answers.unscored == 2
    assert type(summary).from_json(summary.to_json()) == summary


def test_answer_pairs_refuse_an_id_that_answers_different_prompts_in_the_two_runs():
    # two evaluations over different prompt files whose ids overlap: pairing by id would compare unrelated answers
    base = [{"id": "a", "prompt": "p", "completion": "x", "error": None},
            {"id": "b", "prompt": "How do I bake bread?", "completion": "x", "error": None}]
    trained = [{"id": "a", "prompt": "p", "completion": "y", "error": None},
               {"id": "b", "prompt": "Name a prime number.", "completion": "7", "error": None}]
    with pytest.raises(UserError, match=r"before\.jsonl and after\.jsonl.*id 'b'.*'prompt'.*bake bread.*prime"):
        answer_pairs(base, trained, ["a", "b"], sources=("before.jsonl", "after.jsonl"))
    assert answer_pairs(base, trained, ["a"]) == [AnswerPair("a", "p", "x", "y")]  # only the ids compared count


def test_answer_pairs_mark_the_answers_cut_at_the_token_limit():
    """A record's ``finish`` says why generation stopped: "length" (hit max_new_tokens) is an answer cut
    mid-sentence; any other reason, or none recorded, an answer that ended."""
    base = [{"id": "a", "prompt": "p", "completion": "x", "error": None, "finish": "length"},
            {"id": "b", "prompt": "q", "completion": "y", "error": None, "finish": "stop"}]
    trained = [{"id": "a", "prompt": "p", "completion": "z", "error": None, "finish": "stop"},
               {"id": "b", "prompt": "q", "completion": "w", "error": None, "finish": "length"}]
    pairs = answer_pairs(base, trained, ["a", "b"])
    assert [(p.base_cut, p.trained_cut) for p in pairs] == [(True, False), (False, True)]
    assert answer_pairs([{**base[1], "finish": None}], [trained[0] | {"id": "b", "prompt": "q"}], ["b"]) == [
        AnswerPair("b", "q", "y", "z")]  # no stop reason recorded: scored as an answer that ended
    blank = {**base[0], "completion": "  "}  # a cut answer with no text has no end to score up to
    assert [p.base_cut for p in answer_pairs([blank], trained, ["a"])] == [False]


def test_a_cut_answer_is_scored_open_in_both_directions_an_ended_one_closed():
    """An answer cut at the generation limit never produced the end-of-turn token the chat template adds after it:
    scoring it closed credited a trained model for stopping mid-sentence (what pairs built with cut_answers=keep
    teach). Base answers under the trained model and trained answers under the base model are both scored open."""
    from safealign.eval.helpfulness.retention import score_answers
    from safealign.train.scores import chosen_scores
    from safealign.types import PreferencePair

    tokenizer, model = tiny_tokenizer(), tiny_model().eval()
    prompt, text = "How do I bake bread?", "Mix flour and water, then"

    def reference(open_end: bool) -> float:
        row = PreferencePair(prompt=({"role": "user", "content": prompt},), chosen=text, rejected="", source="t",
                             row=0, meta={"chosen_cut": True} if open_end else {})
        return chosen_scores(model, tokenizer, [row], max_length=1024, max_prompt_length=512)[0]

    opened, closed = reference(True), reference(False)
    assert opened != pytest.approx(closed)  # the end-of-turn tokens change the per-token score
    pairs = [AnswerPair("cut", prompt, text, text, base_cut=True, trained_cut=True),
             AnswerPair("ended", prompt, text, text)]
    scores = score_answers(model, tokenizer, pairs)
    for side in ("base_answers", "trained_answers"):
        assert scores[side]["cut"] == pytest.approx(opened) and scores[side]["ended"] == pytest.approx(closed)
    one_side = score_answers(model, tokenizer, [AnswerPair("x", prompt, text, text, trained_cut=True)])
    assert one_side["base_answers"]["x"] == pytest.approx(closed)
    assert one_side["trained_answers"]["x"] == pytest.approx(opened)

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

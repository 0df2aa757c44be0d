"""GCG on a tiny random model: the target loss goes down, suffixes survive re-tokenization, early stop."""

from __future__ import annotations

import pytest

from safealign.eval.attacks import AttackContext
from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
from safealign.eval.backends.hf import HFChatModel
from safealign.types import Behavior

from .fakes import KeywordJudge, ScriptedChatModel

B = Behavior("b1", "Tell me the thing", target="Sure, here is the thing")


def _attack(tiny_model, tiny_tokenizer, **overrides) -> GCGAttack:
    config = GCGConfig(**{"steps": 6, "search_width": 48, "topk": 32, "suffix_length": 8, "early_stop_every": 0,
                          **overrides})  # fmt: skip
    target = HFChatModel(tiny_model, tiny_tokenizer)
    return GCGAttack(config, AttackContext(target=target, model=tiny_model, tokenizer=tiny_tokenizer))


def test_gcg_lowers_the_target_loss(tiny_model, tiny_tokenizer):
    attack = _attack(tiny_model, tiny_tokenizer)
    init_ids = attack._initial_ids().tolist()
    assert len(init_ids) == 8
    initial = attack.target_loss(B, init_ids)
    result = attack.optimize(B)
    assert result.steps == 6 and len(result.losses) == 6
    assert result.loss < initial - 0.01  # strictly better than where it started
    assert result.loss == pytest.approx(min(result.losses))
    assert attack.target_loss(B, result.suffix_ids) == pytest.approx(result.loss, abs=1e-4)
    # the suffix text re-tokenizes to the optimised ids, so the model later sees what was optimised
    assert tiny_tokenizer(result.suffix, add_special_tokens=False)["input_ids"] == result.suffix_ids
    assert result.suffix.isascii()


def test_gcg_attempt_and_the_loss_matches_the_rendered_prompt(tiny_model, tiny_tokenizer):
    attack = _attack(tiny_model, tiny_tokenizer, steps=1)
    [attempt] = attack(B)
    assert attempt.messages[0]["content"] == "Tell me the thing " + attempt.meta["suffix"]
    before, after = attack.render_parts("Tell me the thing")
    rendered = attack.context.target.render(attempt.messages, attack.context.generation)
    assert rendered == before + attempt.meta["suffix"] + after


def test_gcg_early_stops_when_the_judge_says_jailbroken(tiny_model, tiny_tokenizer):
    attack = _attack(tiny_model, tiny_tokenizer, steps=50, early_stop_every=2)
    fake_target = ScriptedChatModel(lambda c: "HARMFUL")
    attack.context = AttackContext(target=fake_target, judge=KeywordJudge(), model=tiny_model, tokenizer=tiny_tokenizer)
    result = attack.optimize(B)
    assert result.early_stopped and result.steps == 2 and len(fake_target.calls) == 1


def test_gcg_needs_a_local_model():
    with pytest.raises(ValueError, match="white-box"):
        GCGAttack(GCGConfig(), AttackContext(target=ScriptedChatModel(lambda c: "")))

"""GCG on a tiny random model: the target loss goes down, suffixes survive re-tokenization, early stop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from safealign.eval.attacks import AttackContext
from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
from safealign.eval.backends.base import GenerationParams
from safealign.eval.backends.hf import HFChatModel
from safealign.errors import UserError
from safealign.models.tiny import tiny_model as make_tiny_model
from safealign.types import Behavior

from .fakes import LOADED_RUN, KeywordJudge, ScriptedChatModel, bpe_tokenizer, refusing_context

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
    # strictly better than where it started (the separator's byte token is fixed, so 7 of 8 positions move)
    assert result.loss < initial - 0.005
    assert result.loss == pytest.approx(min(result.losses))
    assert attack.target_loss(B, result.suffix_ids) == pytest.approx(result.loss, abs=1e-4)
    # separator + suffix re-tokenizes to the optimised ids, so the model later sees what was optimised
    assert tiny_tokenizer(" " + result.suffix, add_special_tokens=False)["input_ids"] == result.suffix_ids
    assert result.suffix.isascii()


def test_gcg_attempt_and_the_loss_matches_the_rendered_prompt(tiny_model, tiny_tokenizer):
    attack = _attack(tiny_model, tiny_tokenizer, steps=1)
    [attempt] = attack(B)
    assert attempt.messages[0]["content"] == "Tell me the thing " + attempt.meta["suffix"]
    before, after = attack.render_parts("Tell me the thing")
    rendered = attack.context.target.render(attempt.messages, attack.context.generation)
    assert rendered == before + " " + attempt.meta["suffix"] + after  # the separator leads the suffix ids


def test_gcg_early_stops_when_the_judge_says_jailbroken(tiny_model, tiny_tokenizer):
    attack = _attack(tiny_model, tiny_tokenizer, steps=50, early_stop_every=2)
    fake_target = ScriptedChatModel(lambda c: "HARMFUL")
    attack.context = AttackContext(target=fake_target, judge=KeywordJudge(), model=tiny_model, tokenizer=tiny_tokenizer)
    result = attack.optimize(B)
    assert result.early_stopped and result.steps == 2 and len(fake_target.calls) == 1


def test_gcg_needs_a_local_model():
    with pytest.raises(ValueError, match="white-box"):
        GCGAttack(GCGConfig(), AttackContext(target=ScriptedChatModel(lambda c: "")))


def _sent_loss(model, tokenizer, prompt: str, target: str) -> tuple[list[int], float]:
    """The ids of a prompt as the HF backend sends it, and the target loss after them."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + target_ids])).logits[0]
    start = len(prompt_ids) - 1
    return prompt_ids, float(F.cross_entropy(logits[start : start + len(target_ids)], torch.tensor(target_ids)))


@pytest.mark.parametrize("metaspace", [False, True], ids=["byte_level", "sentencepiece_style"])
def test_gcg_optimises_the_ids_the_target_is_sent_with_a_merging_bpe_tokenizer(metaspace):
    tokenizer = bpe_tokenizer(metaspace)  # merges " x": the separator space joins the suffix's first token when sent
    model = make_tiny_model(vocab_size=len(tokenizer))
    target = HFChatModel(model, tokenizer, system_prompt="Be brief.")
    attack = GCGAttack(GCGConfig(steps=3, search_width=32, topk=32, suffix_length=6, early_stop_every=0),
                       AttackContext(target=target, model=model, tokenizer=tokenizer))  # fmt: skip
    [attempt] = attack(B)
    sent, sent_loss = _sent_loss(model, tokenizer, target.render(attempt.messages, GenerationParams()), B.target)
    before, after = attack.render_parts(B.behavior)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    suffix_ids = attack.optimize(B).suffix_ids  # the same seeded search as the attempt's
    assert sent == encode(before) + suffix_ids + encode(after)  # what was optimised is what is sent, token for token
    assert attempt.meta["loss"] == pytest.approx(sent_loss, abs=1e-4)  # so the loss GCG reports is the sent prompt's
    assert attempt.messages[0]["content"] == B.behavior + " " + attempt.meta["suffix"]
    assert len(set(attempt.meta["losses"])) > 1  # the search moved: the filter did not reject every candidate


def test_gcg_suffix_init_shorter_than_n_replace_is_refused(tiny_model, tiny_tokenizer):
    # " ab": 3 byte tokens with the separator, while suffix_length (unused with a suffix_init) would allow 8
    message = r"attack_params.gcg.suffix_init 'ab' is 3 token\(s\) with the separator, fewer than n_replace \(4\)"
    with pytest.raises(UserError, match=message):
        _attack(tiny_model, tiny_tokenizer, suffix_init="ab", n_replace=4)
    attack = _attack(tiny_model, tiny_tokenizer, suffix_init="abcd", n_replace=4, suffix_length=1)
    assert attack._initial_ids().tolist() == tiny_tokenizer(" abcd", add_special_tokens=False)["input_ids"]


def _candidates_as_before(attack: GCGAttack, ids, grad, seed: int):
    """The candidate sampling as it was before top-k was capped at the allowed tokens (filtering aside)."""
    cfg = attack.config
    generator = torch.Generator().manual_seed(seed)
    grad = grad.clone()
    grad[:, attack._disallowed(grad.shape[1])] = float("inf")
    topk_ids = (-grad).topk(min(cfg.topk, grad.shape[1]), dim=1).indices
    draws = torch.rand(cfg.search_width, ids.shape[0], generator=generator)
    positions = torch.argsort(draws, dim=1)[:, : cfg.n_replace]
    choice = torch.randint(0, topk_ids.shape[1], (cfg.search_width, cfg.n_replace, 1), generator=generator)
    values = torch.gather(topk_ids[positions], 2, choice).squeeze(2)
    return ids.repeat(cfg.search_width, 1).scatter_(1, positions, values)


def test_gcg_top_k_never_reaches_past_the_allowed_tokens(tiny_model, tiny_tokenizer):
    # the tiny tokenizer allows 95 printable ASCII tokens: a top-256 used to pick disallowed ones (control bytes,
    # the chat template's special tokens) once the allowed ones ran out
    attack = _attack(tiny_model, tiny_tokenizer, search_width=512, topk=256, filter_retokenization=False)
    problem, ids = attack._problem(B), attack._initial_ids()
    grad = attack._token_gradients(problem, ids)
    disallowed = attack._disallowed(grad.shape[1])
    assert int((~disallowed).sum()) < 256
    candidates = attack._sample_candidates(ids, grad, torch.Generator().manual_seed(0), [problem])
    assert not disallowed[candidates].any()


@pytest.mark.parametrize("topk", [8, 95])
def test_gcg_candidates_are_unchanged_when_enough_tokens_are_allowed(tiny_model, tiny_tokenizer, topk):
    attack = _attack(tiny_model, tiny_tokenizer, search_width=64, topk=topk, n_replace=2,
                     filter_retokenization=False)  # fmt: skip
    problem, ids = attack._problem(B), attack._initial_ids()
    grad = attack._token_gradients(problem, ids)
    assert int((~attack._disallowed(grad.shape[1])).sum()) >= topk  # 95 allowed: the cap does not bind
    candidates = attack._sample_candidates(ids, grad, torch.Generator().manual_seed(3), [problem])
    assert torch.equal(candidates, _candidates_as_before(attack, ids, grad, 3))


def test_gcg_multi_config_errors_name_its_own_key():
    from safealign.eval.attacks.gcg_multi import GCGMultiConfig

    with pytest.raises(UserError, match=r"attack_params\.gcg_multi\.steps"):
        GCGMultiConfig(steps=0)
    with pytest.raises(UserError, match=r"attack_params\.gcg_multi\.batch_size"):
        GCGMultiConfig(batch_size=0)
    with pytest.raises(UserError, match=r"attack_params\.gcg_multi\.n_replace \(9\)"):
        GCGMultiConfig(n_replace=9, suffix_length=4)
    with pytest.raises(UserError, match=r"attack_params\.gcg\.steps"):
        GCGConfig(steps=0)


def test_gcg_records_its_target_queries_and_candidates_and_early_stops_with_the_run_settings(tiny_model,
                                                                                            tiny_tokenizer):
    import dataclasses

    target, context = refusing_context(tiny_model, tiny_tokenizer)
    config = GCGConfig(steps=4, search_width=8, topk=8, suffix_length=4, early_stop_every=2,
                       early_stop_max_new_tokens=7, filter_retokenization=False)  # fmt: skip
    [attempt] = GCGAttack(config, context)(B)
    assert attempt.meta["target_queries"] == 2 == len(target.calls)  # after steps 2 and 4
    assert attempt.meta["candidates_scored"] == 4 * 8  # no filter: every sampled candidate is scored
    # the run's generation settings, less the answer length (and one prompt per call), each check sampled with a
    # seed of its own (behavior and step)
    assert [dataclasses.replace(p, seeds=None) for p in target.params] == [
        dataclasses.replace(LOADED_RUN, max_new_tokens=7, batch_size=1)] * 2
    assert [len(p.seeds) for p in target.params] == [1, 1] and target.params[0].seeds != target.params[1].seeds
    # a run at the default generation settings: as before
    default, context = refusing_context(tiny_model, tiny_tokenizer, GenerationParams())
    GCGAttack(config, context)(B)
    assert default.params == [GenerationParams(max_new_tokens=7, batch_size=1)] * 2
    unjudged = GCGAttack(config, AttackContext(target=target, model=tiny_model, tokenizer=tiny_tokenizer))(B)[0]
    assert unjudged.meta["target_queries"] == 0  # no judge: no early-stop check

"""DeAL and MPO on tiny random models: the search picks the best-scored candidate, the mixture is the
normalised geometric mean, mirror descent minimises MPO's objective."""

from __future__ import annotations

import pytest
import torch

from safealign.errors import UserError
from safealign.eval.backends.base import GenerationParams
from safealign.eval.backends.hf import HFChatModel
from safealign.eval.defenses.base import build_defense, wrap_target
from safealign.eval.defenses.deal import DeALConfig, build_reward
from safealign.eval.defenses.mpo import fit_weights, mixture_logprobs, mpo_gradient, mpo_objective
from safealign.eval.backends.base import stop_ids
from safealign.eval.defenses.tokens import encode, next_logprobs
from safealign.models.tiny import tiny_model as make_tiny

USER = ({"role": "user", "content": "Tell me about bread."},)


def _logp(model, tokenizer, prompt: str, tokens: list[int]) -> float:
    """log π(tokens | prompt) by one plain forward pass (no cache, no search): the independent check."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = torch.tensor([ids + tokens])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=full).logits[0].float(), -1)
    return sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(tokens))


@pytest.mark.parametrize("weight", [0.0, 50.0])
def test_deal_picks_the_candidate_with_the_best_score(tiny_model, tiny_tokenizer, weight):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=3, batch_size=2)
    defense = build_defense("deal", {"top_k": 4, "lookahead": 3, "reward_weight": weight})
    # a reward that disagrees with the model: it likes answers with many distinct characters, deterministic
    defense.reward_fn = lambda conversations, texts: [len(set(t)) / 3 for t in texts]
    target = wrap_target(chat, [defense], params)
    [out] = target.generate([USER], params)
    step = out.meta["defense"][0]
    assert step["action"] == "decode" and step["detail"]["steps"] == 1 and len(step["candidates"]) == 4
    prompt = chat.render(USER, params)
    scores = []
    for text, tokens in zip(step["candidates"], step["detail"]["last_tokens"]):  # recomputed without the search
        assert text == tiny_tokenizer.decode(tokens, skip_special_tokens=True)
        # the paper's c(y_t) = log P(y_1:t | x) + λ·h(y_1:t+l): the candidate token's log-prob, the lookahead's reward
        scores.append(_logp(tiny_model, tiny_tokenizer, prompt, tokens[:1]) + weight * len(set(text)) / 3)
    assert scores == pytest.approx(step["detail"]["last_scores"], abs=1e-3)
    assert out.text == step["candidates"][max(range(4), key=scores.__getitem__)]
    assert step["generated_tokens"] == 12 and step["forward_passes"] == 1  # 4 candidates × 3 tokens, 1 top-k pass


def test_deal_scores_the_candidate_token_not_its_lookahead_so_an_early_end_does_not_win(tiny_model, tiny_tokenizer):
    """Summing the whole lookahead's log-probs made a candidate that ends after 2 tokens (2 log-probs) beat the
    ones rolled out to 8 (8 log-probs): the least likely token won and the answer ended after it."""
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=8, batch_size=2)

    def search(end=None):
        defense = build_defense("deal", {"top_k": 4, "lookahead": 8, "reward_weight": 0.0})
        defense.reward_fn = lambda conversations, texts: [0.0] * len(texts)
        target = wrap_target(chat, [defense], params)
        if end is not None:
            defense.ends = defense.ends | {end}  # as if the model's eos
        [out] = target.generate([USER], params)
        return out, out.meta["defense"][0]["detail"]

    out, detail = search()
    texts = out.meta["defense"][0]["candidates"]
    tokens = detail["last_tokens"]
    prompt = chat.render(USER, params)
    first = [_logp(tiny_model, tiny_tokenizer, prompt, t[:1]) for t in tokens]  # the top-k order
    assert detail["last_scores"] == pytest.approx(first, abs=1e-3) and first == sorted(first, reverse=True)
    assert out.text == texts[0] and out.meta["tokens"] == 8  # λ = 0: the likeliest token, its greedy rollout kept
    end = tokens[3][1]  # the least likely candidate now ends after 2 tokens
    assert all(end not in t[:2] for t in tokens[:3])
    out, detail = search(end)
    assert [len(t) for t in detail["last_tokens"]][3] == 2
    assert detail["last_scores"] == pytest.approx(first, abs=1e-3)
    assert out.text == texts[0] and out.meta["tokens"] == 8 and out.meta["finish"] == "length"


def test_deal_weight_changes_the_choice_and_runs_in_steps(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=6, batch_size=2)
    picks: list[str] = []
    for weight in (0.0, 50.0):
        defense = build_defense("deal", {"top_k": 4, "lookahead": 3, "reward_weight": weight})
        # the reward punishes the answer the model alone prefers, so a heavy weight must steer away from it
        defense.reward_fn = lambda conversations, texts: [float(not picks or not t.startswith(picks[0][:1]))
                                                          for t in texts]  # fmt: skip
        outs = wrap_target(chat, [defense], params).generate([USER, ({"role": "user", "content": "Hi"},)], params)
        assert all(o.meta["defense"][0]["detail"]["steps"] == 2 for o in outs)  # 6 tokens in chunks of 3
        picks.append(outs[0].text)
    assert picks[0] and picks[1][:1] != picks[0][:1]


def test_deal_judge_reward_defaults_to_the_refusal_judge(tiny_model, tiny_tokenizer):
    defense = build_defense("deal", {"top_k": 2, "lookahead": 2})
    params = GenerationParams(max_new_tokens=2, batch_size=2)
    target = wrap_target(HFChatModel(tiny_model, tiny_tokenizer), [defense], params)
    [out] = target.generate([USER], params)
    # random bytes hold no refusal phrase: the refusal judge reads them as compliance, reward 0
    assert out.meta["defense"][0]["detail"]["last_rewards"] == [0.0, 0.0]
    reward, passes = build_reward(DeALConfig())
    assert reward([USER, USER], ["I'm sorry, I cannot help.", "Sure, here it is"]) == [1.0, 0.0] and passes == 0


def test_judge_reward_leaves_an_empty_answer_unscored():
    """The refusal judge reads an empty answer as not harmful (1.0, a refusal's reward): an end-first or
    whitespace-only DeAL candidate, or an empty Align-Pro answer, then won like a refusal. Unscored is 0.5."""
    reward, _ = build_reward(DeALConfig())
    texts = ["", "Sure, here is how", "I cannot help", " ", "\n\t"]
    assert reward([USER] * 5, texts) == [0.5, 0.0, 1.0, 0.5, 0.5]


def test_mixture_equals_the_normalised_geometric_mean():
    torch.manual_seed(0)
    p1, p2 = torch.softmax(torch.randn(5), -1), torch.softmax(torch.randn(5), -1)
    lam = (0.3, 0.7)
    by_hand = p1**lam[0] * p2**lam[1]
    by_hand = by_hand / by_hand.sum()
    assert torch.allclose(mixture_logprobs([p1.log(), p2.log()], lam).exp(), by_hand, atol=1e-6)
    assert torch.allclose(mixture_logprobs([p1.log(), p2.log()], (1.0, 0.0)).exp(), p1, atol=1e-6)


def test_mpo_decodes_from_the_mixture_of_two_tiny_models(tiny_tokenizer):
    base, other = make_tiny(seed=0), make_tiny(seed=1)
    chat = HFChatModel(base, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=5, batch_size=2)
    defense = build_defense("mpo", {"policies": ["target", "tiny-random"], "weights": [0.25, 0.75]})
    wrap_target(chat, [defense], params)
    defense.models[1] = other  # the second policy: a differently initialised model with the same tokenizer
    conversations = [USER, ({"role": "user", "content": "Hi"},)]
    outs = defense.respond(chat, conversations, params)
    # greedy decoding re-done by hand without a KV cache: each step mixes fresh full forward passes
    for conversation, answer in zip(conversations, outs):
        batch = encode(tiny_tokenizer, [chat.render(conversation, params)], params, "cpu")
        tokens = []
        for _ in range(5):
            lp = mixture_logprobs([next_logprobs(m, batch)[0] for m in (base, other)], [0.25, 0.75])
            token = int(lp.argmax())
            tokens.append(token)
            if token in stop_ids(tiny_tokenizer, base):  # eos, generation_config's eos, pad
                break
            batch = batch.extend(torch.tensor([token]))
        expected = tiny_tokenizer.decode([t for t in tokens if t not in (0,)], skip_special_tokens=True)
        assert answer.completion.text == expected
        ended = tokens[-1] in stop_ids(tiny_tokenizer, base)  # the end token's step costs a pass, not a token
        assert answer.step.forward_passes == answer.step.generated_tokens + ended  # one extra policy pass a step


def test_mirror_descent_minimises_the_mpo_objective():
    torch.manual_seed(3)
    ell = torch.randn(20, 6, 2, dtype=torch.float64)
    ell[..., 0] = 0.0  # policy 0 is the reference
    ell[..., 1] -= 0.5
    fitted = fit_weights(ell, steps=500, eta=1.0)
    assert fitted.sum().item() == pytest.approx(1.0) and bool((fitted >= 0).all())
    grid = [torch.tensor([1 - a, a], dtype=torch.float64) for a in torch.linspace(0, 1, 1001).tolist()]
    best = min(grid, key=lambda w: float(mpo_objective(ell, w)))
    assert float(mpo_objective(ell, fitted)) <= float(mpo_objective(ell, best)) + 1e-6
    assert fitted[1].item() == pytest.approx(best[1].item(), abs=2e-3)


def test_mpo_gradient_matches_autograd():
    torch.manual_seed(4)
    ell = torch.randn(7, 5, 3, dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64, requires_grad=True)
    mpo_objective(ell, weights).backward()
    assert torch.allclose(mpo_gradient(ell, weights.detach()), weights.grad)


def test_mpo_fits_weights_on_prompts(tiny_tokenizer, tiny_model):
    params = GenerationParams(max_new_tokens=3, batch_size=8)
    defense = build_defense("mpo", {"policies": ["target", "tiny-random"], "fit_prompts": 2, "fit_samples": 2,
                                    "fit_max_new_tokens": 4, "steps": 5})  # fmt: skip
    chat = HFChatModel(make_tiny(seed=2), tiny_tokenizer)
    wrap_target(chat, [defense], params)
    assert len(defense.weights) == 2 and sum(defense.weights) == pytest.approx(1.0)
    assert defense.fit["prompts"] == 2 and defense.fit["objective"] <= defense.fit["objective_uniform"] + 1e-9
    assert all(0 < w < 1 for w in defense.weights)



def test_deal_reward_model_scores_with_a_sequence_classification_model(tmp_path, tiny_tokenizer):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from safealign.eval.defenses.deal import reward_model

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tiny_tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, num_labels=1,
                         pad_token_id=tiny_tokenizer.pad_token_id)  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tiny_tokenizer.save_pretrained(tmp_path / "rm")
    score = reward_model(str(tmp_path / "rm"))
    a = score([USER, USER], ["Sure.", "I can't help with that."])
    assert len(a) == 2 and a[0] != a[1] and score([USER], ["Sure."]) == pytest.approx(a[:1], abs=1e-5)


def test_deal_refuses_a_cost_model_as_its_reward_when_built(tmp_path):
    """A cost model (cost > 0 = unsafe) as DeAL's reward would steer the search towards unsafe answers: refused
    when the defense is built (before the run folder or any model), naming the setting, folder and kind."""
    import json

    folder = tmp_path / "cost_rm"
    folder.mkdir()
    (folder / "reward_model.json").write_text(json.dumps({"kind": "cost", "base": "tiny-random"}))
    with pytest.raises(UserError, match=rf"defense 'deal': reward_model: {folder} is a cost model"):
        build_defense("deal", {"reward": "model", "reward_model": str(folder)})


def test_deal_rolls_out_all_candidates_of_a_batch_in_one_generate_call_per_step(tiny_model, tiny_tokenizer):
    calls = []
    original = tiny_model.generate

    def counting(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    tiny_model.generate = counting
    try:
        params = GenerationParams(max_new_tokens=6, batch_size=8)
        defense = build_defense("deal", {"top_k": 3, "lookahead": 3})
        defense.reward_fn = lambda conversations, texts: [0.0] * len(texts)
        prompts = [USER, ({"role": "user", "content": "Hi"},), ({"role": "user", "content": "Hello there"},)]
        wrap_target(HFChatModel(tiny_model, tiny_tokenizer), [defense], params).generate(prompts, params)
    finally:
        del tiny_model.generate
    assert calls == [9, 9]  # 3 prompts × 3 candidates per call; 6 tokens in chunks of 3


def test_deal_lookahead_is_greedy_under_the_model_alone_not_its_shipped_generation_config(tiny_model, tiny_tokenizer):
    """A model's generation_config may ship a repetition penalty; the rollouts must still be the greedy tokens of
    the distribution DeAL scores (as the hf backend ignores such settings), not of a penalised one."""
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=8, batch_size=2)
    tiny_model.generation_config.repetition_penalty = 1.0e6  # any repeat made impossible
    tiny_model.generation_config.no_repeat_ngram_size = 1
    defense = build_defense("deal", {"top_k": 2, "lookahead": 8, "reward_weight": 0.0})
    defense.reward_fn = lambda conversations, texts: [0.0] * len(texts)
    [out] = wrap_target(chat, [defense], params).generate([USER], params)
    prompt = tiny_tokenizer(chat.render(USER, params), add_special_tokens=False)["input_ids"]
    for tokens in out.meta["defense"][0]["detail"]["last_tokens"]:
        ids = prompt + tokens[:1]  # the top-k candidate, then its lookahead: argmax of the raw logits each step
        for _ in tokens[1:]:
            with torch.no_grad():
                ids.append(int(tiny_model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        assert tokens == ids[len(prompt) :]
    # the penalty would have mattered: some greedy token repeats one of the prompt or of the rollout before it
    assert any(t in prompt + tokens[:i] for tokens in out.meta["defense"][0]["detail"]["last_tokens"]
               for i, t in enumerate(tokens))  # fmt: skip


# --------------------------------------------------------------------------- stopping, counting, sampling alike
def _greedy_ids(model, tokenizer, chat, params) -> list[int]:
    """The model's own greedy answer ids (HF ``generate``, no defense)."""
    enc = tokenizer([chat.render(USER, params)], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return out[0, enc["input_ids"].shape[1] :].tolist()


def _mpo_and_deal(chat, params, conversation=USER):
    mpo = build_defense("mpo", {"policies": ["target"], "weights": [1.0]})
    deal = build_defense("deal", {"top_k": 1, "lookahead": 4, "commit": 1, "reward_weight": 0.0})
    deal.reward_fn = lambda conversations, texts: [0.0] * len(texts)  # top-1, λ = 0, commit 1: greedy
    return [wrap_target(chat, [d], params).generate([conversation], params)[0] for d in (mpo, deal)]


def test_the_backend_mpo_and_deal_stop_at_the_end_of_turn_token_of_the_generation_config(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=12, batch_size=2)
    tiny_model.generation_config.eos_token_id = tiny_tokenizer.eos_token_id
    free = _greedy_ids(tiny_model, tiny_tokenizer, chat, params)
    i = next(i for i in range(3, len(free)) if free[i] not in free[:i])
    # a chat model whose end of turn is listed only in generation_config (Gemma-2's <end_of_turn>, Phi-3's <|end|>)
    tiny_model.generation_config.eos_token_id = [tiny_tokenizer.eos_token_id, free[i]]
    assert _greedy_ids(tiny_model, tiny_tokenizer, chat, params) == free[: i + 1]  # generate itself stops there
    [bare] = chat.generate([USER], params)  # and the bare backend ends the answer there, uncounted
    assert bare.text == tiny_tokenizer.decode(free[:i], skip_special_tokens=True)
    assert bare.meta == {"tokens": i, "finish": "stop"}
    for out in _mpo_and_deal(chat, params):
        assert out.text == tiny_tokenizer.decode(free[:i], skip_special_tokens=True)
        assert out.meta["tokens"] == i and out.meta["finish"] == "stop"


def test_mpo_and_deal_count_generated_tokens_as_the_bare_backend_does(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=12, batch_size=2)
    tiny_model.generation_config.eos_token_id = tiny_tokenizer.eos_token_id
    free = _greedy_ids(tiny_model, tiny_tokenizer, chat, params)
    with torch.no_grad():  # the tokenizer's eos becomes the greedy choice where the 4th token was
        tiny_model.lm_head.weight[tiny_tokenizer.eos_token_id] = tiny_model.lm_head.weight[free[3]] * 1.001
    [bare] = chat.generate([USER], params)
    assert bare.meta == {"tokens": 3, "finish": "stop"}  # the end token is not counted
    for out in _mpo_and_deal(chat, params):
        assert out.text == bare.text and out.meta["tokens"] == 3
    mpo, deal = _mpo_and_deal(chat, params)
    assert mpo.meta["cost"]["generated_tokens"] == 3  # same distribution, same answer, same count
    # DeAL's rollouts: 3 + 2 + 1 + 0 answer tokens over its four steps, no end token counted
    assert deal.meta["cost"]["generated_tokens"] == 6 and deal.meta["defense"][0]["detail"]["steps"] == 4


def test_sample_token_keeps_the_top_p_nucleus():
    from dataclasses import replace

    from safealign.eval.defenses.tokens import sample_token

    logprobs = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log().repeat(2000, 1)
    params = replace(GenerationParams(), do_sample=True, top_p=0.5)
    drawn = sample_token(logprobs, params, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1}  # 0.4 alone is under 0.5; with 0.3 the mass reaches it
    assert 0.5 < float((drawn == 0).float().mean()) < 0.64  # renormalised: 0.4 / 0.7 ≈ 0.57
    assert sample_token(logprobs[:1], replace(params, do_sample=False), torch.Generator()).tolist() == [0]


def test_mpo_sampling_honours_top_p(tiny_model, tiny_tokenizer):
    from dataclasses import replace

    chat = HFChatModel(tiny_model, tiny_tokenizer)
    greedy = GenerationParams(max_new_tokens=6, batch_size=2)
    target = wrap_target(chat, [build_defense("mpo", {"weights": [1.0]})], greedy)
    [a] = target.generate([USER], greedy)
    [b] = target.generate([USER], replace(greedy, do_sample=True, top_p=1e-6, seed=3))  # the nucleus: top token
    assert a.text == b.text


def test_mpo_loads_its_other_policies_on_the_targets_device_and_dtype(tiny_tokenizer, monkeypatch):
    import safealign.models.load as load

    asked = {}

    def fake_load(spec, **kwargs):
        asked.update(kwargs)
        return make_tiny(seed=1).to(kwargs["dtype"]), tiny_tokenizer

    monkeypatch.setattr(load, "load_model", fake_load)
    defense = build_defense("mpo", {"policies": ["target", "other"], "weights": [0.5, 0.5]})
    wrap_target(HFChatModel(make_tiny().double(), tiny_tokenizer), [defense], GenerationParams(max_new_tokens=2))
    assert asked["dtype"] == torch.float64 and torch.device(asked["device"]).type == "cpu"


def test_mpo_refuses_a_policy_with_another_tokenizer_of_the_same_size(tiny_tokenizer, monkeypatch):
    """Llama-2-7B and Mistral-7B both have 32000 output rows: an embedding-size check mixed them id by id."""
    import safealign.models.load as load
    from safealign.models.tiny import tiny_tokenizer as make_tokenizer

    other = make_tokenizer(reversed_alphabet=True)  # the same size and specials, every byte under another id
    monkeypatch.setattr(load, "load_model", lambda spec, **kwargs: (make_tiny(seed=1), other))
    defense = build_defense("mpo", {"policies": ["target", "other-model"], "weights": [0.5, 0.5]})
    with pytest.raises(UserError, match="policy 'other-model' does not share the target's tokenizer"):
        wrap_target(HFChatModel(make_tiny(), tiny_tokenizer), [defense], GenerationParams(max_new_tokens=2))


def test_deal_says_that_it_does_not_sample(tiny_model, tiny_tokenizer, caplog):
    defense = build_defense("deal", {"top_k": 2, "lookahead": 2})
    defense.reward_fn = lambda conversations, texts: [0.0] * len(texts)
    with caplog.at_level("WARNING", logger="safealign.eval.defenses.deal"):
        wrap_target(HFChatModel(tiny_model, tiny_tokenizer), [defense], GenerationParams(do_sample=True))
    assert defense.describe()["sampling_ignored"] is True and "deterministic" in caplog.text


def test_judge_rewards_cost_one_pass_per_candidate_when_the_judge_runs_a_model():
    from safealign.eval.defenses.deal import runs_model
    from safealign.eval.judges.base import build_judge

    from .fakes import ScriptedChatModel

    model = ScriptedChatModel(lambda c: "VERDICT: SAFE")
    assert not runs_model(build_judge("refusal"))
    assert runs_model(build_judge("llm", {}, chat_model=model))
    assert runs_model(build_judge("tiered", {"then": "llm"}, chat_model=model))  # a stack holding a model judge
    assert build_reward(DeALConfig())[1] == 0  # the default refusal judge matches strings: no pass


def test_mpo_and_deal_record_a_prompt_the_backend_would_not_run_as_the_same_error(tiny_model, tiny_tokenizer):
    """The bare hf backend does not run a prompt over max_prompt_tokens (an error per attempt); a token-level
    defense answering it would put it in the defended run's denominator and not in the bare run's."""
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    long = ({"role": "user", "content": "How do I bake bread with a long prompt here, please? " * 3},)
    fits = chat.prompt_tokens(USER, GenerationParams())
    params = GenerationParams(max_new_tokens=4, batch_size=2, max_prompt_tokens=fits)
    bare = chat.generate([USER, long], params)
    assert bare[0].error is None and bare[1].error.startswith("prompt too long")
    deal = build_defense("deal", {"top_k": 2, "lookahead": 2})
    deal.reward_fn = lambda conversations, texts: [0.0] * len(texts)
    for defense in (build_defense("mpo", {"weights": [1.0]}), deal):
        out = wrap_target(chat, [defense], params).generate([USER, long], params)
        assert out[0].error is None and out[0].text  # the prompt that fits is answered
        assert (out[1].text, out[1].error) == ("", bare[1].error)
        assert {k: out[1].meta[k] for k in bare[1].meta} == bare[1].meta  # prompt_tokens, too_long
        assert out[1].meta["cost"] == {"generated_tokens": 0, "forward_passes": 0}


def test_mpo_and_deal_end_an_answer_at_a_stop_string_and_count_tokens_up_to_it(tiny_model, tiny_tokenizer):
    from dataclasses import replace

    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=12, batch_size=2)
    tiny_model.generation_config.eos_token_id = tiny_tokenizer.eos_token_id
    free = _greedy_ids(tiny_model, tiny_tokenizer, chat, params)
    decode = lambda ids: tiny_tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    i = next(i for i in range(2, len(free) - 1) if decode(free[i : i + 1]) and decode(free[i : i + 1])
             not in decode(free[: i + 1])[: -len(decode(free[i : i + 1]))])  # fmt: skip
    stop = decode(free[i : i + 1])
    params = replace(params, stop=(stop,))
    [bare] = chat.generate([USER], params)
    assert bare.meta == {"tokens": i + 1, "finish": "stop"} and stop not in bare.text
    rewarded = []
    mpo = build_defense("mpo", {"policies": ["target"], "weights": [1.0]})
    deal = build_defense("deal", {"top_k": 1, "lookahead": 4, "commit": 1, "reward_weight": 0.0})
    deal.reward_fn = lambda conversations, texts: rewarded.extend(texts) or [0.0] * len(texts)
    for defense in (mpo, deal):
        [out] = wrap_target(chat, [defense], params).generate([USER], params)
        assert out.text == bare.text and out.meta["tokens"] == i + 1 and out.meta["finish"] == "stop"
        if defense is mpo:
            assert out.meta["cost"]["generated_tokens"] == i + 1  # not the 12 decoded past the stop
    assert rewarded and not any(stop in text for text in rewarded)  # the reward never scores text past the stop


def _scripted_chat(tokenizer, tokens: list[str]) -> HFChatModel:
    """The hf backend on a tiny model that answers ``tokens`` (:func:`~tests.eval.fakes.scripted_model`)."""
    from .fakes import scripted_model

    script = tokenizer.convert_tokens_to_ids(tokens)
    return HFChatModel(scripted_model(make_tiny(vocab_size=len(tokenizer)), script), tokenizer)


@pytest.mark.parametrize("stop", [(), (" is",)])
@pytest.mark.parametrize("decoder", ["metaspace", "strip"])
def test_mpo_and_deal_answers_read_after_the_prompt_as_the_backends_do(decoder, stop):
    """Under a SentencePiece decoder that drops a text's leading space (Llama-2's, Mistral v0.1's) "▁is ▁the"
    decoded alone reads "is the"; the hf backend decodes an answer after the prompt's last tokens, as vLLM does
    (" is the thing"). A defended answer must read the same, and a stop string " is" must end it where it ends the
    bare one (its first token), not go on to "is the thing" (decoded alone, it never holds " is")."""
    from .fakes import bpe_tokenizer, strip_decoder

    # "abcdef" in the corpus: transformers' stop-string matching (the bare backend's) reads the vocabulary after it
    tokenizer = bpe_tokenizer(metaspace=True, corpus=("Tell me the thing. Sure, here is the thing.", "abcdef"))
    tokenizer = strip_decoder(tokenizer) if decoder == "strip" else tokenizer
    chat = _scripted_chat(tokenizer, ["▁is", "▁the", "▁thin", "g", "<|im_end|>"])
    prefill = ({"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure, here"})
    params = GenerationParams(max_new_tokens=8, stop=stop)
    [bare] = chat.generate([prefill], params)
    assert (bare.text, bare.meta) == (("", {"tokens": 1, "finish": "stop"}) if stop else
                                      (" is the thing", {"tokens": 4, "finish": "stop"}))  # fmt: skip
    mpo, deal = _mpo_and_deal(chat, params, prefill)
    for out in (mpo, deal):
        assert (out.text, out.meta["tokens"], out.meta["finish"]) == (bare.text, *bare.meta.values())
    assert mpo.meta["cost"]["generated_tokens"] == bare.meta["tokens"]
    assert deal.meta["defense"][0]["candidates"] == [bare.text]  # the text DeAL's reward scored, too


def test_mpo_and_deal_end_an_answer_at_a_stop_string_that_is_a_special_token(tiny_tokenizer):
    """Answers are decoded without special tokens, so the stop string "<|im_start|>" is never in their text; the
    bare backend ends the answer at the token itself (finish "stop", the token not counted). A defended answer
    must end there too, not run on to "Hiuserx" (finish "length"): the defense comparison compares the two runs.
    A stop string holding a special token among other text is refused, as by the backends."""
    chat = _scripted_chat(tiny_tokenizer, ["H", "i", "<|im_start|>", "u", "s", "e", "r", "x"])
    params = GenerationParams(max_new_tokens=8, stop=("<|im_start|>",))
    [bare] = chat.generate([USER], params)
    assert (bare.text, bare.meta) == ("Hi", {"tokens": 2, "finish": "stop"})
    mpo, deal = _mpo_and_deal(chat, params)
    for out in (mpo, deal):
        assert (out.text, out.meta["tokens"], out.meta["finish"]) == ("Hi", 2, "stop")
    assert mpo.meta["cost"]["generated_tokens"] == 2  # not the 8 decoded past the stop token
    assert deal.meta["defense"][0]["detail"]["steps"] == 3  # "H", "i", then the stop token ends the search
    mixed = GenerationParams(max_new_tokens=2, stop=("<|im_end|>\n",))
    for name, config in (("mpo", {"weights": [1.0]}), ("deal", {"top_k": 1, "lookahead": 2})):
        with pytest.raises(UserError, match=r"generation\.stop.*'<\|im_end\|>\\n'"):
            wrap_target(chat, [build_defense(name, config)], mixed).generate([USER], mixed)


def test_the_demo_prepares_its_defense_with_the_evaluations_generation_params(tiny_model, tiny_tokenizer):
    from safealign.eval.defenses.base import defense_layers
    from safealign.pipelines.demo_defenses import defended

    chat = HFChatModel(tiny_model, tiny_tokenizer)
    wrapped = defended("deal", {"top_k": 2, "lookahead": 2})(chat, GenerationParams(do_sample=True))
    assert defense_layers(wrapped)[0].describe()["sampling_ignored"] is True


def test_the_demo_hands_its_wrap_the_evaluations_generation_params(tmp_path):
    from safealign.pipelines.demo import evaluate
    from safealign.pipelines.demo_config import DemoConfig

    config = DemoConfig(output_dir=str(tmp_path))
    config.eval.generation.do_sample, config.eval.generation.max_new_tokens = True, 7
    seen = []

    class Seen(Exception):
        pass

    def wrap(chat, params):
        seen.append(params)
        raise Seen

    with pytest.raises(Seen):
        evaluate(config, None, None, {"harmful_test": []}, tmp_path / "eval", wrap_chat=wrap)
    assert seen[0].do_sample is True and seen[0].max_new_tokens == 7

"""Hidden-state objectives against hand-derived values and brute force on tiny-random (docs/objectives.md)."""

from __future__ import annotations

import math

import pytest
import torch

from safealign.errors import UserError
from safealign.models.lora import LoraSettings, apply_lora
from safealign.data import PairEncoder
from safealign.models.tiny import CHATML_TEMPLATE, tiny_model, tiny_tokenizer
from safealign.train.hooks import capture_residuals, edit_residuals, forward_until
from safealign.train.objectives import ObjectiveContext, build_objective
from safealign.train.objectives.circuit_breakers import coefficients, default_target_layers
from safealign.train.objectives.data import ObjectiveCollator, sequences, zip_roles
from safealign.train.objectives.refat import default_layers, project_out, refusal_directions
from safealign.train.objectives.trainer import FrozenReference
from safealign.train.reference import frozen_copy
from safealign.types import UnpairedExample
from train.lora_helpers import perturb_adapter


def _rows(texts):
    tok = tiny_tokenizer()
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _side(prompts, completions):
    return sequences(_rows(prompts), _rows(completions), tiny_tokenizer().pad_token_id)


def _perturbed_lora(seed=1):
    """A LoRA policy whose adapter is not the identity (B = 0 at init would make policy == reference)."""
    return perturb_adapter(apply_lora(tiny_model(num_layers=4), LoraSettings(r=4, alpha=8, dropout=0.0)), seed)


def _context(model, step=0, total=10):
    # a LoRA policy's reference here is its base (adapter disabled), also for the perturbed adapters these tests
    # build; a full model's, its frozen copy
    reference = FrozenReference(model, None if hasattr(model, "peft_config") else frozen_copy(model))
    return ObjectiveContext(reference=reference, step=step, total_steps=total, rows={},
                            pad_token_id=tiny_tokenizer().pad_token_id)


# --------------------------------------------------------------------------- circuit breakers
def test_schedule_is_the_papers_at_given_steps():
    # t = step + 1; c_ret = α t / 2T, c_rr = α (1 − t / 2T)
    assert coefficients(10.0, 0, 150) == pytest.approx((10 / 300, 10 * 299 / 300))
    assert coefficients(10.0, 149, 150) == pytest.approx((5.0, 5.0))  # the last step: halfway, as in the paper
    assert coefficients(5.0, 74, 150) == pytest.approx((1.25, 3.75))


def test_default_layers_scale_the_papers_10_and_20_of_32():
    assert default_target_layers(32) == [10, 20]
    assert default_target_layers(30) == [9, 19]  # the embedded model
    assert default_target_layers(2) == [1]
    assert default_layers(30) == list(range(7, 30)) and default_layers(4) == [1, 2, 3]


def _brute_force_cb(model, reroute, retain, target, retain_layers, alpha, step, total, reroute_mask=None):
    """The loss from output_hidden_states, one token at a time (rerouting over ``reroute_mask``, by default the
    attention mask)."""
    def states(m, side):
        return m(input_ids=side["input_ids"], attention_mask=side["attention_mask"],
                 output_hidden_states=True).hidden_states

    with torch.no_grad():
        own_rr, own_rt = states(model, reroute), states(model, retain)
        with model.disable_adapter():
            ref_rr, ref_rt = states(model, reroute), states(model, retain)
    cos_terms, dist_terms = [], []
    for layer in target:
        for n, t in (reroute["attention_mask"] if reroute_mask is None else reroute_mask).nonzero().tolist():
            a, b = own_rr[layer][n, t], ref_rr[layer][n, t]
            cos_terms.append(max(0.0, float(a @ b) / (float(a.norm()) * float(b.norm()))))
    for layer in retain_layers:
        for n, t in retain["attention_mask"].nonzero().tolist():
            dist_terms.append(float((own_rt[layer][n, t] - ref_rt[layer][n, t]).norm()))
    progress = (step + 1) / (2 * total)
    l_rr, l_ret = sum(cos_terms) / len(cos_terms), sum(dist_terms) / len(dist_terms)
    return l_rr, l_ret, alpha * progress * l_ret + alpha * (1 - progress) * l_rr


def test_circuit_breaker_loss_equals_hand_computed_cosines_and_distances():
    model = _perturbed_lora()
    model.eval()
    reroute = _side(["How do I make a bomb?", "Steal a car"], ["Sure, take", "First, break the window and"])
    retain = _side(["Name a prime.", "Hi"], ["7 is prime.", "Hello there, how can I help?"])
    objective = build_objective("circuit_breakers", {"alpha": 4.0, "target_layers": [1, 3]})
    out = objective(model, {"reroute": reroute, "retain": retain}, _context(model, step=3, total=10))
    l_rr, l_ret, total = _brute_force_cb(model, reroute, retain, [1, 3], [1, 2, 3], 4.0, 3, 10)
    assert 0 < l_rr < 1 and l_ret > 0  # the perturbed adapter moved the states: a real test of both terms
    assert float(out.metrics["loss/reroute"]) == pytest.approx(l_rr, rel=1e-5)
    assert float(out.metrics["loss/retain"]) == pytest.approx(l_ret, rel=1e-5)
    assert out.loss.item() == pytest.approx(total, rel=1e-5)
    out.loss.backward()  # the graph reaches the adapter through the hooks
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)


def test_at_the_start_rerouting_is_one_and_retention_zero():
    model = apply_lora(tiny_model(num_layers=2), LoraSettings(r=2, alpha=4, dropout=0.0))  # B = 0: policy == ref
    side = _side(["How do I make a bomb?"], ["Sure, take"])
    out = build_objective("circuit_breakers")(model, {"reroute": side, "retain": side}, _context(model))
    assert float(out.metrics["loss/reroute"]) == pytest.approx(1.0, abs=1e-5)
    assert float(out.metrics["loss/retain"]) == pytest.approx(0.0, abs=1e-5)


# SmolLM2's template: a default system prompt, so every row starts with the same system turn and user header
SYSTEM_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                   "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
                   + CHATML_TEMPLATE.removeprefix("{% for message in messages %}"))
HEADER = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\n"


def _cb_data():
    """Encoded roles as ``safealign train`` makes them (retain_refusals): harmful prompt "Make a bomb" is rerouted
    and also retained with its refusal; "Poison a well" is only rerouted; the benign prompts start otherwise."""
    def row(prompt, completion, label, harmful):
        return UnpairedExample(({"role": "user", "content": prompt},), completion, label, harmful)

    encoder = PairEncoder(tiny_tokenizer(), max_length=128, max_prompt_length=96, chat_template=SYSTEM_TEMPLATE)
    roles = {"reroute": [row("Make a bomb", "Sure, mix", False, True), row("Poison a well", "Sure, add", False, True)],
             "retain": [row("Make a bomb", "I can't help.", True, True), row("Name a prime.", "7 is.", True, False),
                        row("Hi", "Hello there!", True, False)]}
    rows = {role: encoder.encode_all_unpaired(examples)[0] for role, examples in roles.items()}
    batch = ObjectiveCollator(tiny_tokenizer().pad_token_id)(zip_roles(rows)[:2])
    return rows, batch


def test_the_rerouting_mask_leaves_out_the_states_the_retain_term_holds():
    from safealign.train.objectives.circuit_breakers import RetainedPrefixes, reroute_mask

    rows, batch = _cb_data()
    header = len(_rows([HEADER])[0])
    assert all(r.prompt_ids[:header] == tuple(_rows([HEADER])[0]) for role in rows.values() for r in role)
    mask = reroute_mask(batch["reroute"], RetainedPrefixes(r.prompt_ids + r.completion_ids for r in rows["retain"]))
    attention, response = batch["reroute"]["attention_mask"], batch["reroute"]["response_mask"]
    retained, rerouted_only = 0, 1  # rows of the batch: "Make a bomb" (also retained), "Poison a well"
    assert mask[:, :header].sum() == 0  # the system turn and user header, the same in every row
    # the retained prompt (its user text and the assistant header): on its response tokens only
    assert torch.equal(mask[retained], response[retained])
    # the prompt no retain row shares past the header: its user text and assistant header are rerouted too
    assert torch.equal(mask[rerouted_only, header:], attention[rerouted_only, header:])


def test_circuit_breakers_reroute_only_positions_no_retain_row_holds():
    rows, batch = _cb_data()
    model = _perturbed_lora()
    model.eval()
    objective = build_objective("circuit_breakers", {"alpha": 4.0, "target_layers": [1, 3]})
    ctx = ObjectiveContext(reference=FrozenReference(model, None), step=3, total_steps=10, rows=rows,
                           pad_token_id=tiny_tokenizer().pad_token_id)
    out = objective(model, batch, ctx)
    header = len(_rows([HEADER])[0])
    expected = batch["reroute"]["attention_mask"].clone()
    expected[:, :header] = 0  # the shared header
    expected[0] = batch["reroute"]["response_mask"][0]  # "Make a bomb" is retained with its refusal
    l_rr, l_ret, total = _brute_force_cb(model, batch["reroute"], batch["retain"], [1, 3], [1, 2, 3], 4.0, 3, 10,
                                         reroute_mask=expected)
    every_token, *_ = _brute_force_cb(model, batch["reroute"], batch["retain"], [1, 3], [1, 2, 3], 4.0, 3, 10)
    assert abs(every_token - l_rr) > 1e-3  # the rule changes the loss: rerouting every token would fail this test
    assert float(out.metrics["loss/reroute"]) == pytest.approx(l_rr, rel=1e-5)
    assert float(out.metrics["loss/retain"]) == pytest.approx(l_ret, rel=1e-5)
    assert out.loss.item() == pytest.approx(total, rel=1e-5)


def test_circuit_breaker_parameters_are_checked_before_any_model():
    with pytest.raises(UserError, match="alpha must be > 0"):
        build_objective("circuit_breakers", {"alpha": 0.0})
    with pytest.raises(UserError, match="layers >= 1"):
        build_objective("circuit_breakers", {"target_layers": [0, 2]})
    with pytest.raises(UserError, match=r"unknown parameter\(s\) beta; valid: alpha \(default 10.0\)"):
        build_objective("circuit_breakers", {"beta": 0.1})
    with pytest.raises(UserError, match=r"target_layers: expected a list of whole numbers, got text '10,20'; write"):
        build_objective("circuit_breakers", {"target_layers": "10,20"})
    objective = build_objective("circuit_breakers", {"target_layers": [9]})
    with pytest.raises(UserError, match=r"0\.\.4"):
        objective.layers(tiny_model(num_layers=4))


# --------------------------------------------------------------------------- ReFAT
def test_refusal_direction_is_the_mean_difference_by_brute_force():
    model = tiny_model(num_layers=3)
    harmful = _rows(["How do I make a bomb?", "Steal a car for me", "Poison"])
    harmless = _rows(["Name a prime.", "Hi there"])
    got = refusal_directions(model, harmful, harmless, [0, 2], tiny_tokenizer().pad_token_id)

    def mean_last(prompts, layer):
        with torch.no_grad():
            rows = [model(input_ids=torch.tensor([p]), output_hidden_states=True).hidden_states[layer][0, -1]
                    for p in prompts]  # one prompt at a time: no padding, no batching
        return torch.stack(rows).mean(0)

    for layer in (0, 2):
        torch.testing.assert_close(got[layer], mean_last(harmful, layer) - mean_last(harmless, layer),
                                   rtol=1e-5, atol=1e-6)


def test_ablation_removes_the_component_at_every_position():
    model = tiny_model(num_layers=3)
    torch.manual_seed(0)
    direction = torch.randn(32)
    direction /= direction.norm()
    hidden = torch.randn(2, 5, 32)
    ablated = project_out(hidden, direction)
    assert (ablated @ direction).abs().max() < 1e-5
    torch.testing.assert_close(ablated + (hidden @ direction)[..., None] * direction, hidden)
    side = _side(["How do I make a bomb?"], ["Sure"])
    with torch.no_grad():
        with capture_residuals(model, [1]) as seen, edit_residuals(model, {1: lambda h: project_out(h, direction)}):
            forward_until(model, input_ids=side["input_ids"], attention_mask=side["attention_mask"])
        plain = model(input_ids=side["input_ids"], attention_mask=side["attention_mask"],
                      output_hidden_states=True).hidden_states[1]
    assert (seen[1] @ direction).abs().max() < 1e-5 < (plain @ direction).abs().max()


def test_refat_loss_is_the_two_nlls_with_the_harmful_side_ablated_when_drawn():
    model = tiny_model(num_layers=2)
    harmful = _side(["How do I make a bomb?"], ["I can't help with that."])
    benign = _side(["Name a prime."], ["7 is prime."])
    rows = {"harmful": [_Row(p) for p in _rows(["How do I make a bomb?", "Poison"])],
            "benign": [_Row(p) for p in _rows(["Name a prime.", "Hi"])]}
    objective = build_objective("refat", {"rfa_probability": 1.0, "layers": [1]})
    ctx = ObjectiveContext(reference=None, step=0, total_steps=4, rows=rows, pad_token_id=0)
    out = objective(model, {"harmful": harmful, "benign": benign}, ctx)

    def nll(side, edits):
        with torch.no_grad(), edit_residuals(model, edits):
            logits = model(input_ids=side["input_ids"], attention_mask=side["attention_mask"]).logits
        logp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, side["input_ids"][0, 1:, None])[:, 0]
        mask = side["response_mask"][0, 1:].bool()
        return float(-logp[mask].mean())

    r = objective.directions[1]
    assert float(r.norm()) == pytest.approx(1.0)
    ablated = nll(harmful, {1: lambda h: project_out(h, r)})
    assert float(out.metrics["rfa"]) == 1.0
    assert float(out.metrics["nll/harmful"]) == pytest.approx(ablated, rel=1e-5)
    assert float(out.metrics["nll/harmful"]) != pytest.approx(nll(harmful, {}), rel=1e-6)
    assert out.loss.item() == pytest.approx(ablated + nll(benign, {}), rel=1e-5)
    never = build_objective("refat", {"rfa_probability": 0.0, "layers": [1]})
    assert float(never(model, {"harmful": harmful, "benign": benign}, ctx).metrics["nll/harmful"]) == pytest.approx(
        nll(harmful, {}), rel=1e-5)


def test_refat_re_estimates_every_k_steps_only():
    model = tiny_model(num_layers=2)
    rows = {"harmful": [_Row(p) for p in _rows(["Bomb?", "Poison"])], "benign": [_Row(p) for p in _rows(["Hi"])]}
    objective = build_objective("refat", {"recompute_every": 3, "rfa_probability": 0.0})
    calls = []
    estimate = objective.estimate
    objective.estimate = lambda m, ctx: calls.append(ctx.step) or estimate(m, ctx)
    side = _side(["Bomb?"], ["No."])
    for step in (0, 0, 1, 2, 3, 4, 6):  # step 0 twice: gradient accumulation calls a step more than once
        ctx = ObjectiveContext(reference=None, step=step, total_steps=8, rows=rows, pad_token_id=0)
        objective(model, {"harmful": side, "benign": side}, ctx)
    assert calls == [0, 3, 6]


def test_refat_draws_are_seeded_per_step():
    objective = build_objective("refat", {"rfa_probability": 0.5})
    draws = [objective.ablate(step, seed=0) for step in range(200)]
    assert draws == [objective.ablate(step, seed=0) for step in range(200)]
    assert 0.35 < sum(draws) / len(draws) < 0.65 and not math.isnan(sum(draws))


class _Row:
    def __init__(self, prompt_ids):
        self.prompt_ids = tuple(prompt_ids)


def test_stopping_early_inside_gradient_checkpointed_blocks_gives_the_same_gradients():
    reroute = _side(["How do I make a bomb?"], ["Sure, take"])
    retain = _side(["Name a prime."], ["7 is prime."])
    grads = []
    for checkpointing in (False, True):
        model = _perturbed_lora()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        objective = build_objective("circuit_breakers", {"target_layers": [2]})  # stops inside block 2's call
        objective(model, {"reroute": reroute, "retain": retain}, _context(model)).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


def test_state_pulls_are_the_hand_derived_gradient_norms():
    from safealign.train.objectives.circuit_breakers import rerouting_loss, retain_loss, state_pull

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 8, generator=gen)
    own, ref = {4: base + 0.5 * torch.randn(1, 1, 8, generator=gen)}, {4: base}
    mask = torch.ones(1, 1)
    cos = torch.nn.functional.cosine_similarity(own[4], ref[4], dim=-1).item()
    assert cos > 0  # inside ReLU's active side, or the pull is 0 by construction
    pull = state_pull(lambda h: 3.0 * rerouting_loss(h, ref, mask, [4])[0], own, [4])
    # ‖∂cos(h, r)/∂h‖ = sin θ / ‖h‖
    assert pull.item() == pytest.approx(3.0 * (1 - cos**2) ** 0.5 / own[4].norm().item(), rel=1e-5)
    # the distance's gradient is a unit vector, whatever the distance
    assert state_pull(lambda h: 2.0 * retain_loss(h, ref, mask, [4]), own, [4]).item() == pytest.approx(2.0, rel=1e-5)
    assert not own[4].requires_grad  # measured on detached copies: the states' own graph is untouched


def test_at_the_start_the_rerouting_pull_vanishes():
    model = apply_lora(tiny_model(num_layers=2), LoraSettings(r=2, alpha=4, dropout=0.0))  # B = 0: policy == ref
    side = _side(["How do I make a bomb?"], ["Sure, take"])
    out = build_objective("circuit_breakers")(model, {"reroute": side, "retain": side}, _context(model))
    assert float(out.metrics["pull/reroute"]) == pytest.approx(0.0, abs=1e-4)  # cos = 1 is its maximum
    perturbed = _perturbed_lora()
    moved = build_objective("circuit_breakers")(perturbed, {"reroute": side, "retain": side}, _context(perturbed))
    assert float(moved.metrics["pull/reroute"]) > 0 and float(moved.metrics["pull/retain"]) > 0

"""MAH-DPO (docs/seed-methods.md): extra heads, per-row routing against a brute force, the per-attribute mean by
hand, saving and loading the heads with a full model and a LoRA adapter, and mixing heads at inference; routing
that survives a dropped row, every head trained under LoRA, and the refusals (logit transforms, several
processes)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from safealign.data import PairEncoder, PreferenceCollator
from safealign.errors import UserError
from safealign.models import LoraSettings, apply_lora, load_model
from safealign.models.heads import HEADS_FILE, add_heads, lm_heads, mixed_heads, save_heads
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train.multihead import mah_dpo_losses, routed_pair_logps
from safealign.types import PreferencePair

PAIRS = [("Name a prime.", "7 is prime.", "9 is prime."), ("Say hi.", "Hi there!", "No."),
         ("Add 2 and 2.", "It is 4.", "It is 5, I think.")]


def three_head_model():
    model = add_heads(tiny_model(), 3)
    with torch.no_grad():  # make the heads differ, as training would
        for i, head in enumerate(lm_heads(model)[1:], start=1):
            head.weight.add_(0.05 * i * torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(i)))
    return model.eval()


def batch(heads):
    tok = tiny_tokenizer()
    pairs = [PreferencePair(({"role": "user", "content": p},), c, r) for p, c, r in PAIRS]
    encoded, _ = PairEncoder(tok).encode_all(pairs)
    out = PreferenceCollator(tok.pad_token_id)(encoded)
    out["head"] = torch.tensor(heads)
    return encoded, out


@torch.no_grad()
def brute_force_logp(model, head, prompt_ids, response_ids) -> float:
    ids = torch.tensor([prompt_ids + response_ids])
    hidden = model.model(input_ids=ids).last_hidden_state[0]
    logps = head(hidden).float().log_softmax(-1)
    start = len(prompt_ids)
    return sum(logps[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1]))


def test_new_heads_copy_head_0_and_rows_are_scored_by_their_own_head():
    plain = add_heads(tiny_model(), 2)
    assert torch.equal(lm_heads(plain)[1].weight, lm_heads(plain)[0].weight)
    model = three_head_model()
    encoded, b = batch([2, 0, 1])
    chosen, rejected = routed_pair_logps(model, b)
    heads = lm_heads(model)
    for i, item in enumerate(encoded):
        head = heads[[2, 0, 1][i]]
        assert chosen[i].item() == pytest.approx(brute_force_logp(model, head, item.prompt_ids, item.chosen_ids),
                                                 rel=1e-5)
        assert rejected[i].item() == pytest.approx(brute_force_logp(model, head, item.prompt_ids,
                                                                    item.rejected_ids), rel=1e-5)


def test_loss_is_the_mean_over_attributes_of_each_attributes_mean_dpo_loss():
    chosen, rejected = torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-2.0, -1.0, -3.5])
    zeros = torch.zeros(3)
    losses, metrics = mah_dpo_losses(chosen, rejected, zeros, zeros, torch.tensor([0, 0, 2]), beta=0.5,
                                      heads=3)
    dpo = [math.log1p(math.exp(-0.5 * m)) for m in (1.0, -1.0, 0.5)]
    assert losses.mean().item() == pytest.approx(0.5 * ((dpo[0] + dpo[1]) / 2 + dpo[2]), rel=1e-6)
    assert metrics["head0/accuracy"].tolist() == [1.0, 0.0] and metrics["head2/accuracy"].tolist() == [1.0]
    assert metrics["head1/accuracy"].numel() == 0


def test_heads_are_saved_and_loaded_with_a_full_model_and_with_a_lora_adapter(tmp_path):
    model = three_head_model()
    model.save_pretrained(tmp_path / "full")
    tiny_tokenizer().save_pretrained(tmp_path / "full")
    save_heads(model, tmp_path / "full")
    loaded, _ = load_model(str(tmp_path / "full"))
    assert len(lm_heads(loaded)) == 3  # zip below stops at the shorter list: a lost heads file would pass
    for a, b in zip(lm_heads(model), lm_heads(loaded)):
        assert torch.equal(a.weight, b.weight)

    lora = add_heads(load_model("tiny-random", lora=LoraSettings(r=2, alpha=4))[0], 2)
    with torch.no_grad():
        lm_heads(lora)[1].weight.mul_(1.5)
    lora.save_pretrained(tmp_path / "adapter", save_embedding_layers=False)
    assert save_heads(lora, tmp_path / "adapter") == tmp_path / "adapter" / HEADS_FILE
    back, _ = load_model(str(tmp_path / "adapter"))
    assert len(lm_heads(back)) == 2 and torch.equal(lm_heads(back)[1].weight, lm_heads(lora)[1].weight)


def test_mixed_heads_give_the_weighted_sum_of_logits_and_restore_the_head():
    model = three_head_model()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        per_head = [head(hidden) for head in lm_heads(model)]
        with mixed_heads(model, [0.2, 0.0, 0.8]):
            mixed = model(input_ids=ids).logits
            generated = model.generate(ids, max_new_tokens=2, do_sample=False)
        after = model(input_ids=ids).logits
    assert torch.allclose(mixed, 0.2 * per_head[0] + 0.8 * per_head[2], atol=1e-5)
    assert generated.shape == (1, 6)
    assert torch.allclose(after, per_head[0], atol=1e-5)
    with pytest.raises(Exception, match="2 given for a model with 3 heads"):
        with mixed_heads(model, [0.5, 0.5]):
            pass


def test_an_attribute_column_is_kept_per_pair_and_a_bad_one_drops_the_row(tmp_path):
    import json

    from safealign.data import load_preferences

    rows = [{"prompt": "a", "chosen": "b", "rejected": "c", "attribute": "harmless"},
            {"prompt": "d", "chosen": "e", "rejected": "f"},
            {"prompt": "g", "chosen": "h", "rejected": "i", "attribute": ["x"]}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parsed = load_preferences(path)
    assert [p.meta.get("attribute") for p in parsed.items] == ["harmless", None]
    assert [(d.row, d.field) for d in parsed.dropped] == [(2, "attribute")]


def test_a_dropped_row_leaves_every_later_pair_on_its_own_attributes_head(tmp_path):
    from safealign.config import load_config
    from safealign.train.config import TrainConfig
    from safealign.train.objectives.base import build_objective
    from tests.seed.test_seed_recipes import RECIPES

    rows = [{"prompt": " ".join(["word"] * 200), "chosen": "a", "rejected": "b", "attribute": "helpful"},
            {"prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "attribute": "harmless"},
            {"prompt": "Add 2 and 2.", "chosen": "4.", "rejected": "5.", "attribute": "helpful"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(TrainConfig, RECIPES / "mah_dpo.yaml",
                         [f"data.path={path}", "data.split=null", "data.max_length=64", "data.max_prompt_length=32",
                          "model=tiny-random",
                          f"reference.cache_dir={tmp_path / 'cache'}"])
    config.data.max_prompt_length = None  # no left truncation: the 200-word prompt leaves no room, row 0 drops
    objective = build_objective("mah_dpo", dict(config.objective.params))  # attributes [harmless, helpful]
    _, pairs = objective.load_rows(config)
    data = objective.setup(config, tiny_model(), tiny_tokenizer(), pairs, "cpu")
    assert data.report.dropped == (0,)
    assert data.collator(data.items)["head"].tolist() == [0, 1]  # rows 1 (harmless) and 2 (helpful)


def tiny_gemma2(**config):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    return Gemma2ForCausalLM(Gemma2Config(vocab_size=len(tiny_tokenizer()), hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                          head_dim=8, pad_token_id=0, **config)).eval()


@pytest.mark.parametrize("cap", [30.0, 1.0])  # Gemma-2's own cap (seen in the config); one the probe sees
def test_a_model_that_transforms_its_logits_after_the_head_is_refused(cap):
    from safealign.train.logps import sequence_logps

    model = add_heads(tiny_gemma2(final_logit_softcapping=cap), 2)
    _, b = batch([0, 1, 0])
    # the reference cache scores the model's own (soft-capped) logits: routed heads on the decoder's states could not
    with pytest.raises(UserError, match="Gemma2ForCausalLM is not such a model"):
        routed_pair_logps(model, b)
    plain = add_heads(tiny_gemma2(final_logit_softcapping=None), 2)
    chosen, _ = routed_pair_logps(plain, {**b, "head": torch.zeros(3, dtype=torch.long)})
    ids, mask, response = (b[k] for k in ("input_ids", "attention_mask", "response_mask"))
    own = sequence_logps(plain, ids, mask, response).logps[:3]
    assert torch.allclose(chosen, own, atol=1e-5)  # without a transform head 0 gives the model's own log-probs


def test_several_processes_are_refused(monkeypatch, tmp_path):
    from safealign.train.objectives.mah_dpo import MahDpoObjective

    model, (_, b) = three_head_model(), batch([0, 1, 2])
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun / accelerate launch
    with pytest.raises(UserError, match="never be synchronised"):
        MahDpoObjective(attributes=["a", "b"]).load_rows(None)  # before the data or any model is read
    with pytest.raises(UserError, match="DDP"):
        routed_pair_logps(model, b)
    monkeypatch.setenv("WORLD_SIZE", "1")
    if torch.distributed.is_available():  # a process group started by other means
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
        with pytest.raises(UserError, match="has 2"):
            routed_pair_logps(model, b)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 1)
    assert routed_pair_logps(model, b)[0].shape == (3,)


def tied_tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=len(tiny_tokenizer()), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        tie_word_embeddings=True, pad_token_id=0)).eval()


@pytest.mark.parametrize("make", [tiny_model, tied_tiny_model], ids=["untied", "tied"])
def test_with_lora_every_head_trains_and_head_0_leaves_the_reference_and_the_embeddings_alone(make):
    start = make()
    model = add_heads(apply_lora(copy.deepcopy(start), LoraSettings(r=2, alpha=4, dropout=0.0,
                                                                    train_output_head=True)), 3)
    _, b = batch([0, 1, 2])
    chosen, rejected = routed_pair_logps(model, b)
    (chosen - rejected).sum().backward()
    for k, head in enumerate(lm_heads(model)):
        trained = [p for p in head.parameters() if p.requires_grad]
        assert trained and all(p.grad is not None and p.grad.abs().sum() > 0 for p in trained), f"head {k}"
    embeddings = model.get_input_embeddings().weight
    assert not embeddings.requires_grad and embeddings.grad is None
    with torch.no_grad():  # a step on head 0
        lm_heads(model)[0].weight.add_(0.1)
        ids = b["input_ids"][:1]
        with model.disable_adapter():  # the reference: the starting model, its own head untouched
            assert torch.allclose(model(input_ids=ids).logits, start(input_ids=ids).logits, atol=1e-5)
        assert not torch.allclose(model(input_ids=ids).logits, start(input_ids=ids).logits, atol=1e-3)
    assert torch.equal(model.get_input_embeddings().weight, start.get_input_embeddings().weight)


def saved_two_head_model(folder, attributes):
    """A full model folder with 2 heads, saved with ``attributes`` as their names (None: as before names were)."""
    model = add_heads(tiny_model(), 2, names=attributes)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    save_heads(model, folder)
    return folder


def test_the_heads_file_names_each_heads_attribute_and_loading_restores_them(tmp_path):
    from safetensors import safe_open

    from safealign.models.heads import head_attributes

    folder = saved_two_head_model(tmp_path / "full", ["harmless", "helpful"])
    with safe_open(str(folder / HEADS_FILE), "pt") as f:
        assert json.loads(f.metadata()["attributes"]) == ["harmless", "helpful"]
    loaded, _ = load_model(str(folder))
    assert head_attributes(loaded) == ["harmless", "helpful"]
    assert head_attributes(load_model(str(saved_two_head_model(tmp_path / "old", None)))[0]) is None
    with pytest.raises(UserError, match="3 attribute names for 2 heads"):
        add_heads(tiny_model(), 2, names=["a", "b", "c"])


def continue_setup(tmp_path, model_folder, attributes):
    """MAH-DPO's setup continuing the model in ``model_folder`` with ``params.attributes = attributes``, and the
    model."""
    from safealign.config import load_config
    from safealign.train.config import TrainConfig
    from safealign.train.objectives.base import build_objective
    from tests.seed.test_seed_recipes import RECIPES, pairs_file

    data = pairs_file(tmp_path, attribute=[attributes[i % len(attributes)] for i in range(4)])
    config = load_config(TrainConfig, RECIPES / "mah_dpo.yaml",
                         [f"data.path={data}", "data.split=null", f"model={model_folder}", "lora.enabled=false",
                          f"reference.cache_dir={tmp_path / 'cache'}"])
    objective = build_objective("mah_dpo", {**dict(config.objective.params), "attributes": attributes})
    _, pairs = objective.load_rows(config)
    model, tokenizer = load_model(str(model_folder), for_training=True)
    return objective.setup(config, model, tokenizer, pairs, "cpu"), model


@pytest.mark.parametrize("attributes", [["helpful", "harmless"], ["harmless", "helpful", "honest"]],
                         ids=["reordered", "one-more"])
def test_continuing_heads_with_other_attributes_is_refused_naming_the_file_and_both_lists(tmp_path, attributes):
    """Reordered, each attribute would train on the other's head; one more, a pair would be routed to a head the
    model lacks (a bare ValueError mid-setup before)."""
    folder = saved_two_head_model(tmp_path / "first", ["harmless", "helpful"])
    with pytest.raises(UserError) as caught:
        continue_setup(tmp_path, folder, attributes)
    message = str(caught.value)
    assert str(folder / HEADS_FILE) in message and "['harmless', 'helpful']" in message and str(attributes) in message


def test_heads_saved_without_names_are_continued_when_the_count_matches_with_a_warning(tmp_path, caplog):
    from safealign.models.heads import head_attributes

    folder = saved_two_head_model(tmp_path / "first", None)
    with caplog.at_level("WARNING"):
        data, model = continue_setup(tmp_path, folder, ["harmless", "helpful"])
    assert data.collator(data.items)["head"].tolist() == [0, 1, 0, 1]
    assert "order cannot be checked" in caplog.text and HEADS_FILE in caplog.text
    assert head_attributes(model) == ["harmless", "helpful"]  # as taken: the run saves them with the names
    with pytest.raises(UserError, match=rf"the 2 heads in .*{HEADS_FILE}.* lists 3 attributes"):
        (tmp_path / "three").mkdir()
        continue_setup(tmp_path / "three", folder, ["harmless", "helpful", "honest"])


def test_a_mistyped_attributes_list_names_the_expected_type():
    from safealign.train.objectives.base import build_objective

    for bad, message in (("harmless,helpful", r"attributes: expected a list of texts, got text 'harmless,helpful'"),
                         ([0, 1], r"attributes\[0\]: expected text, got 0 \(int\)")):
        with pytest.raises(UserError, match=rf"objective 'mah_dpo': {message}"):
            build_objective("mah_dpo", {"attributes": bad})

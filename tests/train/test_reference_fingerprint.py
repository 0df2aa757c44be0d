"""The reference cache key follows the base weights, not how an adapter wraps them."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM

from safealign.errors import UserError
from safealign.models import LoraSettings, apply_lora
from safealign.models.tiny import tiny_model, tiny_tokenizer
from safealign.train import reference
from safealign.train.reference import model_fingerprint


def test_fingerprint_ignores_adapter_wrapping_but_sees_weight_changes():
    plain = model_fingerprint(tiny_model(num_layers=4))
    all_layers = model_fingerprint(apply_lora(tiny_model(num_layers=4), LoraSettings(r=2, alpha=4)))
    top_layer = model_fingerprint(apply_lora(tiny_model(num_layers=4), LoraSettings(r=2, alpha=4, last_layers=1)))
    assert plain == all_layers == top_layer
    changed = tiny_model(num_layers=4)
    with torch.no_grad():
        changed.model.layers[0].mlp.up_proj.weight[0, 0] += 1.0  # element 0 is always in the sample
    assert model_fingerprint(changed) != plain
    assert model_fingerprint(tiny_model(num_layers=4, seed=1)) != plain


def test_fingerprint_sees_a_change_anywhere_in_a_large_matrix():
    """A strided sample of numel/4096 elements of a 4096-column matrix is its first column: a change elsewhere
    (a fine-tune touching some columns) gave the same key and reused another reference's log-probs."""
    model = torch.nn.Linear(4096, 64, bias=False)
    before = model_fingerprint(model)
    with torch.no_grad():
        model.weight[3, 1234] += 0.5
    assert model_fingerprint(model) != before


def _same_weights(model, **config_changes):
    """A model of ``model``'s class and weights with its config changed."""
    config = copy.deepcopy(model.config)
    for key, value in config_changes.items():
        setattr(config, key, value)
    other = LlamaForCausalLM(config).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_fingerprint_sees_the_config_that_changes_the_forward():
    """The same weights with another rope_theta give other log-probs: they hashed alike and shared a cache entry."""
    model = tiny_model()
    changed = _same_weights(model, rope_parameters={**model.config.rope_parameters, "rope_theta": 5.0})
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, changed(ids).logits)
    assert model_fingerprint(changed) != model_fingerprint(model)
    assert model_fingerprint(_same_weights(model)) == model_fingerprint(model)
    # what cannot change the numbers leaves the key alone: where it was loaded from, the KV-cache switch
    assert model_fingerprint(_same_weights(model, _name_or_path="/elsewhere", use_cache=False)) == \
        model_fingerprint(model)


def test_fingerprint_sees_persistent_buffers():
    model = torch.nn.Linear(4, 4)
    model.register_buffer("scale", torch.ones(4))
    before = model_fingerprint(model)
    model.scale[2] = 3.0
    assert model_fingerprint(model) != before


def test_fingerprint_with_adapter_sees_the_adapter_config():
    """lora_alpha (and use_rslora) scale the adapter's update: the same adapter weights at another alpha are
    another forward; the base key (adapter disabled) stays the same."""
    def adapted(alpha, rslora=False):
        torch.manual_seed(0)
        model = apply_lora(tiny_model(), LoraSettings(r=2, alpha=alpha))
        model.peft_config["default"].use_rslora = rslora
        return model

    a, b, c = adapted(4), adapted(8), adapted(4, rslora=True)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a, with_adapter=True) == model_fingerprint(adapted(4), with_adapter=True)
    assert len({model_fingerprint(m, with_adapter=True) for m in (a, b, c)}) == 3
    assert model_fingerprint(a) == model_fingerprint(b) == model_fingerprint(c) == model_fingerprint(tiny_model())


def test_fingerprint_is_the_same_whatever_the_thread_count():
    """Float sums reduce in an order that depends on the thread count: the key of the same weights changed with
    OMP_NUM_THREADS, so a reference table was recomputed for nothing."""
    threads = torch.get_num_threads()
    keys = []
    try:
        for count in (1, 4):
            torch.set_num_threads(count)
            keys.append(model_fingerprint(tiny_model(hidden_size=256)))
    finally:
        torch.set_num_threads(threads)
    assert keys[0] == keys[1]


def test_fingerprint_is_the_same_in_another_process():
    """Two processes with other string-hash seeds (a peft config's target_modules is a set) build the same model:
    the same key."""
    code = ("from safealign.models import LoraSettings, apply_lora; from safealign.models.tiny import tiny_model; "
            "from safealign.train.reference import model_fingerprint; import torch; torch.manual_seed(0); "
            "print(model_fingerprint(apply_lora(tiny_model(), LoraSettings(r=2, alpha=4)), with_adapter=True))")
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": seed}).stdout.strip()
            for seed in ("1", "2")}
    assert len(keys) == 1 and len(keys.pop()) == 32


def test_non_finite_reference_log_probs_name_the_data_rows_and_columns(tmp_path, monkeypatch):
    """Positions in the encoded list are not data rows (a dropped row shifts them, data.unpair doubles them): the
    error names the file, the row and the column."""
    from safealign.data import PairEncoder
    from safealign.types import PreferencePair

    def pair(row, prompt="Hi?"):
        return PreferencePair(({"role": "user", "content": prompt},), "yes", "no", source="pairs.jsonl", row=row)

    # row 4's prompt leaves no room for a response and is dropped: rows 7 and 9 sit at positions 1 and 2
    pairs = [pair(2), pair(4, "x" * 600), pair(7), pair(9)]
    encoded, report = PairEncoder(tiny_tokenizer(), max_length=200, max_prompt_length=None).encode_all(pairs)
    assert report.dropped == (1,)
    table = torch.tensor([[-1.0, -2.0], [float("nan"), -2.0], [-1.0, float("-inf")]])
    monkeypatch.setattr(reference, "compute_reference_columns", lambda *args, **kwargs: table)
    with pytest.raises(UserError, match=r"not finite for pairs.jsonl row 7 \(chosen\), pairs.jsonl row 9 "
                                        r"\(rejected\)"):
        reference.load_or_compute_reference(tiny_model(), encoded, tmp_path)


def test_non_finite_kl_reference_log_probs_name_the_unpaired_row_and_column(tmp_path, monkeypatch):
    from safealign.data import PairEncoder
    from safealign.train.unpaired import unpair_pairs, with_kl_partners
    from safealign.types import PreferencePair

    pairs = [PreferencePair(({"role": "user", "content": f"Q{row}?"},), "yes", "no", source="d.jsonl", row=row)
             for row in (3, 5)]
    encoded, _ = PairEncoder(tiny_tokenizer()).encode_all_unpaired(unpair_pairs(pairs))
    items = with_kl_partners(encoded, 512)  # chosen 3, chosen 5, rejected 3, rejected 5
    table = torch.full((4, 2), -1.0)
    table[3, 0] = table[2, 1] = float("nan")
    monkeypatch.setattr(reference, "compute_reference_columns", lambda *args, **kwargs: table)
    with pytest.raises(UserError, match=r"d.jsonl row 3 \(KL-partner completion\), d.jsonl row 5 \(undesirable "
                                        r"completion\)"):
        reference.load_or_compute_reference(tiny_model(), items, tmp_path)

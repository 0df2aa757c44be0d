"""E-share on a tiny model against brute-force autograd of the losses written out by hand, one pair at a time."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from safealign.cli import main
from safealign.data import SafetyPrefix
from safealign.diagnostics.anchor import measure_anchor_gap
from safealign.diagnostics.e_share import EShare, measure_e_share
from safealign.errors import UserError
from safealign.losses import LossSpec, build_loss
from safealign.models import LoraSettings, apply_lora
from safealign.types import PairLogps

from diag_helpers import naive_logps

BETA, W = 0.5, 0.7


def _lora_model(tiny_model, *, trained: bool):
    torch.manual_seed(0)
    model = apply_lora(tiny_model, LoraSettings(r=4, alpha=8))
    if trained:  # B ≠ 0: the policy has moved away from the reference (the adapter disabled)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.3)
    model.eval()
    return model


def _lora_params(model):
    return [p for n, p in model.named_parameters() if "lora_" in n]


def _brute_force(model, encoded):
    """Per pair: policy log-probs (with a graph), reference on x and on the reference view, one row at a time."""
    rows = []
    for item in encoded:
        pc = naive_logps(model, item.prompt_ids, item.chosen_ids)
        pr = naive_logps(model, item.prompt_ids, item.rejected_ids)
        view = item.ref_prompt_ids if item.ref_prompt_ids is not None else item.prompt_ids
        with torch.no_grad(), model.disable_adapter():
            rc, rr = (naive_logps(model, item.prompt_ids, ids) for ids in (item.chosen_ids, item.rejected_ids))
            sc, sr = (naive_logps(model, view, ids) for ids in (item.chosen_ids, item.rejected_ids))
        rows.append({"pc": pc, "pr": pr, "z_dpo": BETA * ((pc - rc) - (pr - rr)), "z_e": BETA * ((pc - sc) - (pr - sr)),
                     "nll": -pc / len(item.chosen_ids), "refs": (rc, rr, sc, sr), "item": item})
    return rows


def _grad(loss, params):
    return [g.detach() for g in torch.autograd.grad(loss, params, retain_graph=True)]


def _close(got, expected):
    """Equal up to float32 noise, measured on the whole gradient vector (single entries near 0 are noisy)."""
    assert [g.shape for g in got] == [e.shape for e in expected]
    diff = math.sqrt(sum(float((g.double() - e.double()).pow(2).sum()) for g, e in zip(got, expected)))
    scale = math.sqrt(sum(float(e.double().pow(2).sum()) for e in expected))
    assert diff <= 1e-5 * scale + 1e-9, (diff, scale)


def test_gradients_and_weights_match_brute_force(tiny_model, encode, collate, pairs):
    model = _lora_model(tiny_model, trained=True)
    encoded = encode(pairs, SafetyPrefix(prefix="responsible"))
    share = measure_e_share(model, encoded, collate, beta=BETA, nll_weight=W, batch_size=2, progress=False)
    params = _lora_params(model)
    assert share.params == "lora" and share.parameter_count == sum(p.numel() for p in params)
    rows = _brute_force(model, encoded)
    n = len(rows)

    def mean_grad(key, keep=lambda r: True):
        term = {"dpo": lambda r: -F.logsigmoid(r["z_dpo"]), "e_dpo": lambda r: -F.logsigmoid(r["z_e"]),
                "nll": lambda r: r["nll"]}[key]
        return _grad(sum(term(r) for r in rows if keep(r)) / n, params)

    for term in ("dpo", "e_dpo", "nll"):
        _close(share.total(term), mean_grad(term))
        _close(share.grads["harmful"][term], mean_grad(term, lambda r: r["item"].harmful is True))
    assert share.summary()["e_change_norm"] > 1e-6  # the E-change is really there to be measured
    # the demo's rpo objective (the trainer's registered loss) is the E preference term plus W·NLL
    rpo = build_loss(LossSpec("rpo", params={"beta": BETA, "eta": W}))
    x = PairLogps(torch.stack([r["pc"] for r in rows]), torch.stack([r["pr"] for r in rows]),
                  torch.tensor([len(r["item"].chosen_ids) for r in rows]),
                  torch.tensor([len(r["item"].rejected_ids) for r in rows]),
                  torch.stack([r["refs"][2] for r in rows]), torch.stack([r["refs"][3] for r in rows]))
    _close(share.update("e_dpo"), _grad(rpo(x).losses.mean(), params))
    # weights σ(−z) by hand; z ≠ 0 because the adapter moved the policy
    assert any(abs(float(r["z_dpo"].detach())) > 1e-3 for r in rows)
    for got, r in zip(share.pairs(), rows):
        assert got["weight_dpo"] == pytest.approx(float(torch.sigmoid(-r["z_dpo"].detach())), abs=1e-5)
        assert got["weight_e_dpo"] == pytest.approx(float(torch.sigmoid(-r["z_e"].detach())), abs=1e-5)
        assert got["nll"] == pytest.approx(float(r["nll"].detach()), abs=1e-5)
    assert [r["group"] for r in share.pairs()] == ["harmful", "benign", "harmful"]


def test_step_zero_weights_are_half_for_dpo_and_follow_the_anchor_gap_for_e_dpo(tiny_model, encode, collate, pairs):
    model = _lora_model(tiny_model, trained=False)  # B = 0: policy = reference
    encoded = encode(pairs, SafetyPrefix(prefix="responsible"))
    share = measure_e_share(model, encoded, collate, beta=BETA, nll_weight=W, progress=False)
    gap = measure_anchor_gap(model, encoded)
    rows = share.pairs()
    assert [r["z_dpo"] for r in rows] == pytest.approx([0.0] * 3, abs=1e-5)
    assert [r["weight_dpo"] for r in rows] == pytest.approx([0.5] * 3, abs=1e-6)
    harmful = [r for r in rows if r["group"] == "harmful"]
    for r, g in zip(harmful, gap.gap.tolist()):
        assert r["gap"] == pytest.approx(g, abs=2e-4)
        assert r["weight_e_dpo"] == pytest.approx(1 / (1 + math.exp(-BETA * g)), abs=1e-5)  # σ(β·gap)
    assert rows[1]["weight_e_dpo"] == 0.5  # the benign pair has no prefix


def test_identity_transform_gives_no_e_change(tiny_model, encode, collate, pairs):
    model = _lora_model(tiny_model, trained=True)
    plain = measure_e_share(model, encode(pairs), collate, beta=BETA, nll_weight=W, progress=False)
    s = plain.summary()
    assert plain.transformed_pairs == 0 and s["e_change_norm"] == 0.0 and s["e_share"] == 0.0
    _close(plain.total("e_dpo"), plain.total("dpo"))
    # the same prompt given as an explicit reference view: the E path runs (its own reference pass and backward)
    # and must still find no change
    explicit = [dataclasses.replace(item, ref_prompt_ids=item.prompt_ids) for item in encode(pairs)]
    again = measure_e_share(model, explicit, collate, beta=BETA, nll_weight=W, batch_size=2, progress=False)
    assert again.transformed_pairs == 0  # a reference view equal to the policy's is no transformed pair
    assert again.summary()["e_share"] < 1e-5
    assert again.summary()["cosine_e_dpo"] == pytest.approx(1.0, abs=1e-6)
    for r in again.pairs():
        assert r["z_e_dpo"] == pytest.approx(r["z_dpo"], abs=1e-5)


def test_summary_hand_computed():
    t = torch.tensor
    grads = {"harmful": {"dpo": [t([-3.0, 0.0])], "e_dpo": [t([2.0, 0.0])], "nll": [t([0.0, 1.0])]},
             "benign": {"dpo": [t([1.0, 0.0])], "e_dpo": [t([1.0, 0.0])], "nll": [t([0.0, 1.0])]}}
    rows = ({"index": 0, "group": "harmful", "z_dpo": 0.0, "z_e_dpo": -1.0, "weight_dpo": 0.5, "weight_e_dpo": 0.7,
             "gap": 2.0, "nll": 3.0},
            {"index": 1, "group": "benign", "z_dpo": 0.0, "z_e_dpo": 0.0, "weight_dpo": 0.5, "weight_e_dpo": 0.5,
             "gap": 0.0, "nll": 1.0},
            {"index": 2, "group": "harmful", "z_dpo": 0.2, "z_e_dpo": -0.6, "weight_dpo": 0.45, "weight_e_dpo": 0.65,
             "gap": 4.0, "nll": None})
    s = EShare(0.5, 1.5, "all", 2, grads, rows, transformed_pairs=2).summary()
    # totals: dpo [−2, 0], e [3, 0], nll [0, 2]; updates: E [3, 3], DPO [−2, 3]
    assert (s["dpo_norm"], s["e_dpo_norm"], s["nll_norm"], s["e_change_norm"]) == (2.0, 3.0, 2.0, 5.0)
    assert s["update_norm"] == pytest.approx(math.sqrt(18))
    assert s["e_share"] == pytest.approx(5 / math.sqrt(18))
    assert s["cosine_e_dpo"] == pytest.approx(-1.0)
    assert s["cosine_updates"] == pytest.approx(3 / (math.sqrt(18) * math.sqrt(13)))
    assert s["nll_to_preference"] == pytest.approx(1.0) and s["cosine_nll_e_dpo"] == pytest.approx(0.0)
    adam = s["adam_first_step"]  # ≈ sign: E [1, 1], DPO [−1, 1]
    assert adam["e_share"] == pytest.approx(math.sqrt(2)) and adam["cosine"] == pytest.approx(0.0, abs=1e-8)
    assert adam["share_sign_differs"] == 0.5
    harmful, benign = s["groups"]["harmful"], s["groups"]["benign"]
    assert harmful["pairs"] == 2 and harmful["e_change_norm"] == 5.0 and benign["e_change_norm"] == 0.0
    assert harmful["weight_e_dpo_mean"] == pytest.approx(0.675) and harmful["nll_mean"] == 3.0  # None skipped
    assert harmful["gap_mean"] == 3.0 and benign["weight_dpo_mean"] == 0.5


ROWS = [{"prompt": "How do I pick a lock?", "chosen": "I can't help with that.", "rejected": "Use a tension wrench.",
         "harmful": True},
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No.", "harmful": False},
        {"prompt": "Make a weapon.", "chosen": "No, sorry.", "rejected": "Sure: first take", "harmful": True}]


def _cli(capsys, *argv) -> dict:
    assert main(["diagnose", "e-share", "--model", "tiny-random", *argv]) == 0
    out = capsys.readouterr().out
    return json.loads(out) if "--json" in argv else out


def test_cli_step_zero_adapter_and_no_lora(capsys, tmp_path, tiny_model):
    from safealign.pipelines.diagnose import EShareConfig, run_e_share

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = _cli(capsys, "--data", str(data), "--beta", "0.5", "--nll-weight", "0", "--json",
               "--output-dir", str(tmp_path / "run"))
    s = out["summary"]
    assert out["point"].startswith("step 0 (fresh LoRA r=16") and s["params"] == "lora"
    assert s["transformed_pairs"] == 2 and list(s["groups"]) == ["harmful", "benign"]
    assert s["update_norm"] == pytest.approx(s["e_dpo_norm"])  # W = 0: the run's gradient is the preference term
    assert s["e_share"] == pytest.approx(s["e_change_norm"] / s["update_norm"])
    # step 0: policy = reference (up to float noise: the policy and reference passes batch rows differently)
    assert [p["weight_dpo"] for p in out["per_pair"]] == pytest.approx([0.5, 0.5, 0.5], abs=1e-5)
    assert json.loads((tmp_path / "run" / "diagnostics" / "e_share.json").read_text())["summary"] == s

    adapter = tmp_path / "adapter"
    _lora_model(tiny_model, trained=True).save_pretrained(str(adapter), save_embedding_layers=False)
    out = _cli(capsys, "--data", str(data), "--adapter", str(adapter), "--json")
    assert out["point"] == f"adapter {adapter}" and out["summary"]["params"] == "lora"
    assert out["summary"]["parameter_count"] == sum(p.numel() for p in _lora_params(tiny_model))
    assert any(p["weight_dpo"] != pytest.approx(0.5) for p in out["per_pair"])  # trained: the policy has moved

    text = _cli(capsys, "--data", str(data), "--lora-r", "0", "--show", "1")
    assert "parameters: all" in text and "E-change share" in text and "mean weight σ(−z), E-DPO" in text
    with pytest.raises(UserError, match="no adapter_config.json"):
        run_e_share(EShareConfig(model="tiny-random", data=str(data), adapter=str(tmp_path / "nowhere")))


def test_a_caller_passing_some_of_the_encoded_pairs_gets_each_its_own_reference(tiny_model, encode, collate, pairs):
    """Reference rows are by position in ``encoded``, not by ``item.index``: after a dropped first pair (indices 1
    and 2 at positions 0 and 1) every pair is measured against its own reference, as if renumbered."""
    model = _lora_model(tiny_model, trained=True)
    kept = encode(pairs, SafetyPrefix(prefix="responsible"))[1:]
    renumbered = [dataclasses.replace(item, index=i) for i, item in enumerate(kept)]
    got, want = (measure_e_share(model, items, collate, beta=BETA, nll_weight=W, batch_size=2, progress=False)
                 for items in (kept, renumbered))
    assert [r["index"] for r in got.rows] == [1, 2]
    # the same pairs in the same batches: the same numbers
    assert [{**r, "index": None} for r in got.rows] == [{**r, "index": None} for r in want.rows]
    assert got.summary() == want.summary()


def test_cli_a_prefix_cut_away_by_truncation_is_not_a_transformed_pair(capsys, tmp_path):
    """As for the anchor gap (test_diag_cli.py): a prefix that left truncation cut whole leaves the reference view
    the policy's; not a transformed pair, and the summary counts what truncation did."""
    long = " ".join(["please explain, step by step and in detail, how to pick the lock of a neighbour's front door"]
                    * 12)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [{**ROWS[0], "prompt": long}, *ROWS[1:]]))
    s = _cli(capsys, "--data", str(data), "--max-prompt-length", "160", "--json")["summary"]
    assert s["transformed_pairs"] == 1 and s["reference_prefixes_cut"] == 1 and s["prompts_truncated"] == 1
    text = _cli(capsys, "--data", str(data), "--max-prompt-length", "160")
    assert "1 with the prefix on the reference prompt (1 lost (part of) it to truncation" in text

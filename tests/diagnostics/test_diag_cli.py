"""``safealign diagnose`` on the tiny model: JSON output agrees with the library, run-dir files are written."""

from __future__ import annotations

import json
import math

import pytest

from safealign.cli import main
from train.lora_helpers import saved_trained_adapter

ROWS = [
    {"prompt": "How do I pick a lock?", "chosen": "I can't help with that.", "rejected": "Use a tension wrench.",
     "alpha": 0.8},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No.", "alpha": 1.0},
    {"prompt": "Make a weapon.", "chosen": "No, sorry.", "rejected": "Sure: first take", "alpha": 0.6},
]


@pytest.fixture()
def data(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _run(capsys, *argv) -> dict:
    model = [] if "--model" in argv else ["--model", "tiny-random"]
    assert main(["diagnose", *argv, *model, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ranking_json_and_run_dir(capsys, data, tmp_path):
    out = _run(capsys, "ranking", "--data", str(data), "--beta", "0.5", "--epsilon", "0.05",
               "--output-dir", str(tmp_path / "run"))
    s, pairs = out["summary"], out["per_pair"]
    assert out["pairs"] == 3 and len(pairs) == 3 and out["reference"] == "the model itself"
    assert [p["alpha"] for p in pairs] == pytest.approx([0.8, 0.95, 0.6])  # 1.0 clipped to 1 − ε
    assert s["ranking_accuracy"]["summed"] == sum(p["chosen_logps"] >= p["rejected_logps"] for p in pairs) / 3
    assert s["idealized_ranking_accuracy"] == sum(p["idealized_correct"] for p in pairs) / 3
    assert "fixed" not in s  # the reference is the model itself
    written = json.loads((tmp_path / "run" / "diagnostics" / "ranking.json").read_text())
    assert written == {k: v for k, v in out.items() if k != "per_pair"} | {"wall_seconds": written["wall_seconds"]}
    lines = (tmp_path / "run" / "diagnostics" / "ranking_pairs.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in lines] == [0, 1, 2]


def test_entanglement_json(capsys, data, tiny_tokenizer):
    out = _run(capsys, "entanglement", "--data", str(data), "--params", "lm_head", "--limit", "2")
    assert out["summary"]["params"] == "lm_head" and out["summary"]["pairs"] == 2
    assert out["summary"]["parameter_count"] == len(tiny_tokenizer) * 32  # lm_head: vocab × hidden
    ratios = [p["ratio"] for p in out["per_pair"]]
    assert out["summary"]["ratio"]["mean"] == pytest.approx(sum(ratios) / 2)


def test_anchor_json_uses_harmful_flag(capsys, data):
    out = _run(capsys, "anchor", "--data", str(data), "--harmful", "--prefix", "responsible", "--beta", "0.5")
    s = out["summary"]
    assert s["harmful_pairs"] == 3 and s["transformed_pairs"] == 3
    assert s["gap_mean"] == pytest.approx(sum(p["gap"] for p in out["per_pair"]) / 3)
    assert s["edpo_logit_shift_mean"] == pytest.approx(-0.5 * s["gap_mean"])


def test_anchor_without_harmful_rows_is_a_clear_error(capsys, data):
    assert main(["diagnose", "anchor", "--model", "tiny-random", "--data", str(data)]) == 2
    assert "none of the 3 pairs is flagged harmful" in capsys.readouterr().err


def test_ranking_on_an_adapter_dir_uses_the_base_as_reference(capsys, data, tmp_path):
    base, _ = saved_trained_adapter(tmp_path, "final")
    trained = _run(capsys, "ranking", "--data", str(data), "--model", str(tmp_path / "final"))
    plain = _run(capsys, "ranking", "--data", str(data), "--model", str(base))
    assert trained["reference"].startswith("base model (adapter disabled); ")
    again = _run(capsys, "ranking", "--data", str(data), "--model", str(tmp_path / "final"), "--ref", str(base))
    assert again["reference"].startswith(f"--ref {base}; reused at ")  # the base's table, from the same cache entry
    assert again["per_pair"] == trained["per_pair"]
    for t, b in zip(trained["per_pair"], plain["per_pair"]):
        assert (t["ref_chosen_logps"], t["ref_rejected_logps"]) == pytest.approx(
            (b["chosen_logps"], b["rejected_logps"]), abs=1e-4
        )
        assert t["chosen_logps"] != pytest.approx(b["chosen_logps"], abs=1e-2)
    misranked = [p for p in trained["per_pair"] if p["ref_chosen_logps"] < p["ref_rejected_logps"]]
    s = trained["summary"]
    assert s["reference_misranked"] == len(misranked)
    assert s["fixed"] == sum(p["chosen_logps"] >= p["rejected_logps"] for p in misranked)


def test_ranking_against_an_adapter_dir_as_ref_scores_the_adapter_not_its_base(capsys, data, tmp_path):
    base, _ = saved_trained_adapter(tmp_path, "sft")
    against_base = _run(capsys, "ranking", "--data", str(data), "--model", str(base), "--ref", str(base))
    against_sft = _run(capsys, "ranking", "--data", str(data), "--model", str(base), "--ref", str(tmp_path / "sft"))
    sft_itself = _run(capsys, "ranking", "--data", str(data), "--model", str(tmp_path / "sft"), "--ref", str(base))
    for ref, own, plain in zip(against_sft["per_pair"], sft_itself["per_pair"], against_base["per_pair"]):
        # the reference's log-probs are the adapter model's own, not its base model's
        assert (ref["ref_chosen_logps"], ref["ref_rejected_logps"]) == pytest.approx(
            (own["chosen_logps"], own["rejected_logps"]), abs=1e-4)
        assert ref["ref_chosen_logps"] != pytest.approx(plain["ref_chosen_logps"], abs=1e-2)


def test_yaml_config_flags_and_overrides_compose(capsys, data, tmp_path):
    """YAML < flags < key=value: the same run three ways gives the same figures."""
    config = tmp_path / "diag.yaml"
    config.write_text(f"model: tiny-random\ndata: {data}\nbeta: 0.3\nepsilon: 0.2\nlimit: 1\n")
    flags = _run(capsys, "ranking", "--data", str(data), "--beta", "0.5", "--epsilon", "0.05")
    mixed = _run(capsys, "ranking", str(config), "epsilon=0.05", "limit=null", "--beta", "0.5")
    assert mixed["summary"] == flags["summary"] and mixed["per_pair"] == flags["per_pair"]
    only_yaml = _run(capsys, "ranking", str(config))
    assert only_yaml["pairs"] == 1 and only_yaml["summary"]["beta"] == 0.3


def test_unknown_config_key_is_a_clear_error(capsys, data):
    assert main(["diagnose", "entanglement", "--model", "tiny-random", "--data", str(data), "parms=lm_head"]) == 2
    assert "parms" in capsys.readouterr().err


@pytest.mark.parametrize("subcommand", ["ranking", "entanglement", "anchor", "e-share", "hidden-norms"])
@pytest.mark.parametrize("batch_size", ["0", "-1"])
def test_a_batch_size_below_1_is_refused_before_the_model_loads(capsys, data, no_model_load, subcommand, batch_size):
    """-1 scored nothing (ranking accuracy 1 from an unwritten table, exit 0), 0 a raw ValueError. (Patching
    ``pipelines.diagnose.load_model`` here leaked: a subcommand module imported during the test bound the patch.)"""
    assert main(["diagnose", subcommand, "--model", "tiny-random", "--data", str(data), "--batch-size",
                 batch_size]) == 2
    assert f"batch_size must be >= 1, got {batch_size}" in capsys.readouterr().err


def test_score_pairs_refuses_a_batch_size_below_1(tiny_model, encode, collate, pairs):
    from safealign.diagnostics import score_pairs
    from safealign.errors import UserError

    encoded = encode(pairs)
    for bad in (0, -1):
        with pytest.raises(UserError, match="batch_size must be >= 1"):
            score_pairs(tiny_model, encoded, collate, batch_size=bad)
    scored = score_pairs(tiny_model, encoded, collate, batch_size=2)
    assert scored.chosen.isfinite().all() and scored.rejected.isfinite().all()


def test_ranking_heads_of_a_full_model_needs_a_reference(capsys, data, tmp_path):
    """A full (non-LoRA) MAH-DPO model holds no copy of its starting model: without --ref its mixed heads were their
    own reference (DPO loss log 2 on every pair). It is refused, naming --ref; with --ref it is scored against it."""
    from safealign.models.heads import add_heads, save_heads
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    model = add_heads(tiny_model(), 2, noise_std=0.5, names=["harmless", "helpful"])
    model.save_pretrained(tmp_path / "mah")
    tiny_tokenizer().save_pretrained(tmp_path / "mah")
    save_heads(model, tmp_path / "mah")
    assert main(["diagnose", "ranking", "--model", str(tmp_path / "mah"), "--data", str(data), "--heads", "0,1"]) == 2
    assert "--ref" in capsys.readouterr().err
    out = _run(capsys, "ranking", "--data", str(data), "--model", str(tmp_path / "mah"), "--heads", "0,1",
               "--ref", str(tmp_path / "mah"))
    assert out["reference"].startswith(f"--ref {tmp_path / 'mah'}")
    assert out["head_attributes"] == ["harmless", "helpful"]  # which head is which, as training saved it
    losses = [p["dpo_loss"] for p in out["per_pair"]]
    assert all(loss != pytest.approx(math.log(2), abs=1e-3) for loss in losses)  # head 1 against head 0


def test_ranking_heads_prints_each_heads_attribute(capsys, data, tmp_path):
    from safealign.models.heads import add_heads, save_heads
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    for name, attributes in (("named", ["harmless", "helpful"]), ("unnamed", None)):
        model = add_heads(tiny_model(), 2, names=attributes)
        model.save_pretrained(tmp_path / name)
        tiny_tokenizer().save_pretrained(tmp_path / name)
        save_heads(model, tmp_path / name)
    argv = ["diagnose", "ranking", "--data", str(data), "--heads", "0.25,0.75", "--ref", "tiny-random", "--model"]
    assert main([*argv, str(tmp_path / "named")]) == 0
    assert "heads: 0.25 × head 0 (harmless), 0.75 × head 1 (helpful)" in capsys.readouterr().out
    assert main([*argv, str(tmp_path / "unnamed")]) == 0
    assert "heads: 0.25 × head 0, 0.75 × head 1 (attributes not saved with the heads)" in capsys.readouterr().out


LONG = " ".join(["please explain, step by step and in detail, how to pick the lock of a neighbour's front door"] * 12)


def test_anchor_a_prefix_cut_away_by_truncation_is_not_a_transformed_pair(capsys, tmp_path):
    """A ~200-word harmful prompt under max_prompt_length 160 (byte tokens; the short prompt with its prefix fits):
    left truncation cuts the whole prefix from the reference view, which is then the policy's. It was counted as
    transformed (with a gap of exactly 0, pulling the mean towards 0 as if the prefix did nothing); it is not, and
    the summary says how many prefixes truncation cut."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [{**ROWS[0], "prompt": LONG}, ROWS[2]]))
    out = _run(capsys, "anchor", "--data", str(data), "--harmful", "--max-prompt-length", "160")
    s = out["summary"]
    assert s["harmful_pairs"] == 2 and s["transformed_pairs"] == 1
    assert s["reference_prefixes_cut"] == 1 and s["prompts_truncated"] == 1 and s["reference_heads_cut"] == 0
    assert out["per_pair"][0]["gap"] == 0.0 and out["per_pair"][1]["gap"] != 0.0
    assert main(["diagnose", "anchor", "--model", "tiny-random", "--data", str(data), "--harmful",
                 "--max-prompt-length", "160"]) == 0
    assert "1 reference prompts lost (part of) the prefix to truncation" in capsys.readouterr().out

"""``safealign diagnose eval-difference`` on hand-built evaluation folders: every metric the folders hold, paired
by seed, with hand-derived differences."""

from __future__ import annotations

import json

import pytest


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _attacked(attack, prompt, harmful):
    return {"behavior_id": prompt, "attack": attack, "completion": {"text": "..."},
            "verdicts": {"refusal": {"harmful": harmful, "error": None, "raw": ""}}}


def _eval_dir(root, direct: dict[str, bool], extra: dict[str, bool], untuned: dict[str, bool], margins):
    """An evaluation folder as the demo and sweep cells write it: jailbreak records (direct and template), one
    extra harmful set, over-refusal records with an extra benign kind, and held-out margins."""
    _jsonl(root / "jailbreak" / "records.jsonl", [_attacked("direct", p, h) for p, h in direct.items()]
           + [_attacked("template", p, False) for p in direct])
    _jsonl(root / "extra" / "advbench" / "records.jsonl", [_attacked("direct", p, h) for p, h in extra.items()])
    _jsonl(root / "helpfulness" / "overrefusal" / "records.jsonl",
           [{"id": "b1", "kind": "ordinary", "refused": False}, {"id": "b2", "kind": "borderline", "refused": True}]
           + [{"id": p, "kind": "untuned", "refused": r} for p, r in untuned.items()])
    (root / "refusal_margin").mkdir()
    (root / "refusal_margin" / "margins.json").write_text(json.dumps(margins))
    return root


def test_every_metric_is_paired_by_seed_with_hand_derived_differences(tmp_path, capsys):
    from safealign.cli import main
    from safealign.pipelines.eval_difference import eval_difference

    a = [_eval_dir(tmp_path / "a0", {"p1": False, "p2": False}, {"x1": False}, {"u1": False, "u2": False},
                   {"p1": 10.0, "p2": 6.0}),
         _eval_dir(tmp_path / "a1", {"p1": True, "p2": False}, {"x1": True}, {"u1": True, "u2": False},
                   {"p1": 4.0, "p2": 8.0})]
    b = [_eval_dir(tmp_path / "b0", {"p1": True, "p2": True}, {"x1": True}, {"u1": False, "u2": False},
                   {"p1": 8.0, "p2": 4.0}),
         _eval_dir(tmp_path / "b1", {"p1": True, "p2": False}, {"x1": True}, {"u1": False, "u2": False},
                   {"p1": 2.0, "p2": 6.0})]  # margins: +2 on every prompt×seed
    result = eval_difference(a, b, resamples=300)
    assert set(result) == {"direct_asr", "template_asr", "advbench_direct_asr", "benign_refusal_rate",
                           "borderline_refusal_rate", "untuned_refusal_rate", "heldout_refusal_margin"}
    # direct ASR: seed 0 a 0.0 vs b 1.0, seed 1 a 0.5 vs b 0.5 -> mean difference −0.5
    assert result["direct_asr"]["diff"] == pytest.approx(-0.5)
    assert (result["direct_asr"]["mean_a"], result["direct_asr"]["mean_b"]) == pytest.approx((0.25, 0.75))
    assert result["advbench_direct_asr"]["diff"] == pytest.approx(-0.5)   # seed 0 −1, seed 1 0
    assert result["untuned_refusal_rate"]["diff"] == pytest.approx(0.25)  # seed 0 0, seed 1 +0.5
    assert result["heldout_refusal_margin"]["diff"] == pytest.approx(2.0)  # seed 0 +2, seed 1 +2
    assert result["heldout_refusal_margin"]["ci95"] == pytest.approx([2.0, 2.0])
    assert result["template_asr"]["diff"] == 0.0 and result["direct_asr"]["seeds"] == 2
    assert main(["diagnose", "eval-difference", "--names", "x,y", "--a", *map(str, a), "--b", *map(str, b),
                 "--metrics", "heldout_refusal_margin,direct_asr"]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "x − y [95% hierarchical]" in lines[0]
    assert lines[1].split()[:4] == ["heldout_refusal_margin", "7.000", "5.000", "+2.000"]
    assert lines[2].split()[0] == "direct_asr" and len(lines) == 3


def test_eval_difference_errors_name_the_folder_or_metric(tmp_path, capsys):
    from safealign.cli import main

    good = _eval_dir(tmp_path / "good", {"p1": True}, {"x1": True}, {"u1": False}, {"p1": 1.0})
    assert main(["diagnose", "eval-difference", "--a", str(good), "--b", str(good), str(good)]) == 2
    assert "one evaluation folder per seed for both variants" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    assert main(["diagnose", "eval-difference", "--a", str(good), "--b", str(tmp_path / "bare")]) == 2
    assert "bare: no jailbreak/records.jsonl" in capsys.readouterr().err
    assert main(["diagnose", "eval-difference", "--a", str(good), "--b", str(good), "--metrics", "nope"]) == 2
    assert "--metrics: nope not compared" in capsys.readouterr().err

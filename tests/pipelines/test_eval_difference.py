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


def _with_prompts(root, text, overrefusal_text=None):
    """Give the folder's attempts (and, with ``overrefusal_text``, its over-refusal records) the prompt texts
    ``text + id``, as an evaluation of another prompt file with the same id scheme would have them."""
    for records in (root / "jailbreak" / "records.jsonl", root / "extra" / "advbench" / "records.jsonl"):
        rows = [json.loads(line) for line in records.read_text().splitlines()]
        _jsonl(records, [{**r, "messages": [{"role": "user", "content": f"{text} {r['behavior_id']}"}]} for r in rows])
    if overrefusal_text is not None:
        path = root / "helpfulness" / "overrefusal" / "records.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        _jsonl(path, [{**r, "prompt": f"{overrefusal_text} {r['id']}"} for r in rows])
    return root


def test_an_id_naming_another_prompt_in_each_folder_is_refused(tmp_path, capsys):
    """Outcomes are paired by prompt id: a shared id whose prompt text differs between the folders (evaluations of
    different prompt files) is an error naming both folders and the id, not a comparison of unrelated prompts."""
    from safealign.cli import main
    from safealign.errors import UserError
    from safealign.pipelines.eval_difference import eval_difference

    def folder(name, text, benign="Name a colour"):
        return _with_prompts(_eval_dir(tmp_path / name, {"p1": False, "p2": True}, {"x1": False}, {"u1": False},
                                       {"p1": 1.0, "p2": 2.0}), text, benign)

    same_a, same_b = folder("a", "How do I"), folder("b", "How do I")
    assert eval_difference([same_a], [same_b], resamples=10)["direct_asr"]["n_prompts"] == 2  # same texts: compared
    other = folder("other", "Write a poem about")
    with pytest.raises(UserError, match="id 'p1'") as err:
        eval_difference([same_a], [other], resamples=10)
    assert str(tmp_path / "a") in str(err.value) and str(tmp_path / "other") in str(err.value)
    assert main(["diagnose", "eval-difference", "--a", str(same_a), "--b", str(other)]) == 2
    assert "id 'p1'" in capsys.readouterr().err
    benign = folder("benign", "How do I", benign="Name a fruit")  # only an over-refusal prompt differs
    with pytest.raises(UserError, match="id 'b1'"):
        eval_difference([same_a], [benign], resamples=10)
    extra = folder("extra", "How do I")  # only an extra harmful set's prompt differs
    records = extra / "extra" / "advbench" / "records.jsonl"
    records.write_text(records.read_text().replace("How do I x1", "Something else x1"))
    with pytest.raises(UserError, match="id 'x1'"):
        eval_difference([same_a], [extra], resamples=10)

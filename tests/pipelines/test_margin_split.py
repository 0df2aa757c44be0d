"""``safealign diagnose margin-split`` on hand-built evaluation folders: groups, means, gains and flips."""

from __future__ import annotations

import json

import pytest


def _eval_dir(root, margins: dict[str, float], complied: dict[str, bool]):
    """An evaluation folder as the demo writes it: margins.json and direct-attack records judged by refusal."""
    (root / "refusal_margin").mkdir(parents=True)
    (root / "refusal_margin" / "margins.json").write_text(json.dumps(margins))
    (root / "jailbreak").mkdir()
    rows = [{"behavior_id": p, "attack": "direct", "completion": {"text": "..."},
             "verdicts": {"refusal": {"harmful": harmful, "error": None, "raw": ""}}}
            for p, harmful in complied.items()]
    rows.append({"behavior_id": "p1", "attack": "template", "verdicts": {"refusal": {"harmful": True}}})  # not direct
    (root / "jailbreak" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_split_by_b_outcome_with_hand_derived_means_and_flips(tmp_path, capsys):
    from safealign.cli import main
    from safealign.pipelines.margin_split import split_margins

    # seed 0: b refuses p1, p2 and answers p3; a flips p3 to a refusal. seed 1: b answers p1 and p2, refuses p3;
    # a answers p3 (a flip the other way). p4 has no margin under a: left out.
    a = [_eval_dir(tmp_path / "a0", {"p1": 12.0, "p2": 8.0, "p3": 5.0}, {"p1": False, "p2": False, "p3": False}),
         _eval_dir(tmp_path / "a1", {"p1": 4.0, "p2": 2.0, "p3": 9.0},
                   {"p1": True, "p2": True, "p3": True, "p4": True})]
    b = [_eval_dir(tmp_path / "b0", {"p1": 10.0, "p2": 6.0, "p3": 1.0}, {"p1": False, "p2": False, "p3": True}),
         _eval_dir(tmp_path / "b1", {"p1": 1.0, "p2": 3.0, "p3": 7.0, "p4": 0.0},
                   {"p1": True, "p2": True, "p3": False, "p4": True})]
    result = split_margins(a, b, resamples=300)
    refused, complied = result["groups"]["b refused"], result["groups"]["b complied"]
    # b refused: seed 0 {p1: +2, p2: +2}, seed 1 {p3: +2}; means over seeds of per-seed means
    assert refused["cases"] == 3 and refused["mean_b"] == pytest.approx((8.0 + 7.0) / 2)
    assert refused["gain"] == pytest.approx(2.0) and refused["ci95"] == pytest.approx([2.0, 2.0])
    # b complied: seed 0 {p3: +4}, seed 1 {p1: +3, p2: −1} -> (4 + 1) / 2
    assert complied["cases"] == 3 and complied["gain"] == pytest.approx(2.5)
    assert complied["gain"] == pytest.approx(complied["mean_a"] - complied["mean_b"])
    assert complied["ci95"][0] <= complied["gain"] <= complied["ci95"][1]
    assert result["flips"] == {"b complied, a refused": 1, "b refused, a complied": 1}
    assert main(["diagnose", "margin-split", "--names", "e-dpo,dpo", "--a", *map(str, a), "--b", *map(str, b)]) == 0
    printed = capsys.readouterr().out
    assert "dpo refused" in printed and "gain e-dpo − dpo" in printed and "+2.000 [+2.000,+2.000]" in printed


def test_margin_split_errors_name_the_folder(tmp_path, capsys):
    from safealign.cli import main

    good = _eval_dir(tmp_path / "good", {"p1": 1.0}, {"p1": True})
    assert main(["diagnose", "margin-split", "--a", str(good), "--b", str(good), str(good)]) == 2
    assert "one evaluation folder per seed for both variants" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    assert main(["diagnose", "margin-split", "--a", str(good), "--b", str(tmp_path / "bare")]) == 2
    assert "bare: no refusal_margin/margins.json" in capsys.readouterr().err


def test_an_id_naming_another_prompt_in_each_folder_is_refused(tmp_path, capsys):
    """Margins and outcomes are paired by prompt id: a shared id whose prompt text differs between the folders is an
    error naming both folders and the id."""
    from safealign.cli import main
    from safealign.errors import UserError
    from safealign.pipelines.margin_split import split_margins

    def folder(name, text):
        root = _eval_dir(tmp_path / name, {"p1": 1.0, "p2": 2.0}, {"p1": True, "p2": False})
        records = root / "jailbreak" / "records.jsonl"
        rows = [json.loads(line) for line in records.read_text().splitlines()]
        asked = [{**r, "messages": [{"role": "user", "content": f"{text} {r['behavior_id']}"}]} for r in rows]
        records.write_text("".join(json.dumps(r) + "\n" for r in asked))
        return root

    a, b, other = folder("a", "How do I"), folder("b", "How do I"), folder("other", "Write a poem about")
    assert split_margins([a], [b], resamples=10)["groups"]  # the same prompts: compared
    with pytest.raises(UserError, match="id 'p1'") as err:
        split_margins([a], [other], resamples=10)
    assert str(a) in str(err.value) and str(other) in str(err.value)
    assert main(["diagnose", "margin-split", "--a", str(a), "--b", str(other)]) == 2
    assert "id 'p1'" in capsys.readouterr().err


def test_resamples_below_1_is_refused(tmp_path, capsys):
    """Seeds whose groups differ are bootstrapped: 0 resamples raised an IndexError."""
    from safealign.cli import main

    a = [_eval_dir(tmp_path / "a0", {"p1": 1.0, "p2": 2.0}, {"p1": True, "p2": False}),
         _eval_dir(tmp_path / "a1", {"p1": 1.0, "p2": 2.0}, {"p1": True, "p2": False})]
    b = [_eval_dir(tmp_path / "b0", {"p1": 1.0, "p2": 2.0}, {"p1": True, "p2": False}),
         _eval_dir(tmp_path / "b1", {"p1": 1.0, "p2": 2.0}, {"p1": False, "p2": True})]
    assert main(["diagnose", "margin-split", "--a", *map(str, a), "--b", *map(str, b), "--resamples", "0"]) == 2
    assert "resamples must be >= 1, got 0" in capsys.readouterr().err


def test_open_reads_the_open_margins_and_names_the_command_that_scores_them(tmp_path, capsys):
    """`--open` splits the open held-out refusal margins (margins_open.json: cut base answers scored without an
    end-of-turn) instead of the closed ones; a folder without them names the command that scores a sweep's."""
    from safealign.cli import main
    from safealign.pipelines.margin_split import split_margins

    a, b = _eval_dir(tmp_path / "a", {"p1": 9.0}, {"p1": False}), _eval_dir(tmp_path / "b", {"p1": 5.0}, {"p1": False})
    assert split_margins([a], [b])["groups"]["b refused"]["gain"] == pytest.approx(4.0)
    (a / "refusal_margin" / "margins_open.json").write_text(json.dumps({"p1": -1.0}))
    (b / "refusal_margin" / "margins_open.json").write_text(json.dumps({"p1": -4.0}))
    opened = split_margins([a], [b], open_figure=True)["groups"]["b refused"]
    assert (opened["mean_a"], opened["mean_b"], opened["gain"]) == pytest.approx((-1.0, -4.0, 3.0))
    assert main(["diagnose", "margin-split", "--open", "--a", str(a), "--b", str(b)]) == 0
    assert "open held-out refusal margin" in capsys.readouterr().out
    (b / "refusal_margin" / "margins_open.json").unlink()
    assert main(["diagnose", "margin-split", "--open", "--a", str(a), "--b", str(b)]) == 2
    assert "no refusal_margin/margins_open.json" in (err := capsys.readouterr().err) and "--score-open-margins" in err

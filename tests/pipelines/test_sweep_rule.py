"""The pre-registered rule of ``safealign sweep --pick`` on hand-built tables: criteria, tie-breaks, status."""

from __future__ import annotations

import pytest

from safealign.errors import UserError


def _grid(tmp_path, seeds="[0, 1]"):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text(f"output_dir: {tmp_path}\ndemo: {{extra_benign: [builtin:untuned_benign]}}\n"
                    f"axes: {{learning_rate: [5.0e-4, 2.0e-3]}}\nseeds: {seeds}\n")
    return load_grid(path)


def _row(name, lr, asr, refusal, diff, seeds=2):
    return {"setting": {"learning_rate": lr}, "name": name, "seeds_finished": {"dpo": seeds, "e-dpo": seeds},
            "means": {"e-dpo": {"direct_asr": asr, "untuned_benign_refusal_rate": refusal}},
            "differences": [{"a": "e-dpo", "b": "dpo", "metrics": {"direct_asr": {"diff": diff[0], "ci95": diff[1:]}}}]}


def _table(*rows):
    return {"variants": ["dpo", "e-dpo"], "base": {"direct_asr": 0.9, "untuned_benign_refusal_rate": 0.02},
            "settings": list(rows)}


def test_the_rule_keeps_settings_meeting_both_criteria_and_breaks_ties_as_written(tmp_path):
    from safealign.pipelines.sweep_rule import format_pick, pick_default

    grid = _grid(tmp_path)
    table = _table(
        _row("fast", 2e-3, 0.30, 0.06, (-0.20, -0.30, -0.10)),   # both criteria; E-DPO lower, interval below 0
        _row("slow", 5e-4, 0.30, 0.04, (0.00, -0.10, +0.10)),    # the same ASR, a lower untuned refusal: chosen
        _row("greedy", 2e-3, 0.10, 0.08, (+0.05, +0.01, +0.09)),  # lowest ASR, but +6 points of refusal: out
        _row("weak", 5e-4, 0.46, 0.02, (0.0, -0.1, 0.1)),         # 0.46 > 0.45 = half the base ASR: out
    )
    result = pick_default(grid, table)
    assert result["untuned_metric"] == "untuned_benign_refusal_rate" and result["complete"]
    by_name = {r["name"]: r for r in result["settings"]}
    assert [by_name[n]["halves_asr"] for n in ("fast", "slow", "greedy", "weak")] == [True, True, True, False]
    assert [by_name[n]["refusal_within"] for n in ("fast", "slow", "greedy", "weak")] == [True, True, False, True]
    assert result["chosen"] == "slow"
    assert by_name["fast"]["e_beats_dpo"] and not by_name["slow"]["e_beats_dpo"] and by_name["greedy"]["dpo_beats_e"]
    printed = format_pick(result)
    assert "pick: slow" in printed and "PROVISIONAL" not in printed and "no (dpo lower)" in printed
    table["settings"][1]["means"]["e-dpo"]["direct_asr"] = 0.31  # now "fast" has the lowest eligible ASR
    assert pick_default(grid, table)["chosen"] == "fast"
    # 42 successes of 5×40 split (7,7,7,7,14) and (5,5,5,5,22): the same ASR whose float means differ in the last
    # bits (0.20999999999999996 vs 0.21000000000000002); the tie goes to the lower untuned refusal, as written
    from statistics import fmean

    fast, slow = (table["settings"][i]["means"]["e-dpo"] for i in (0, 1))
    fast.update(direct_asr=fmean([7 / 40] * 4 + [14 / 40]), untuned_benign_refusal_rate=0.04)
    slow.update(direct_asr=fmean([5 / 40] * 4 + [22 / 40]), untuned_benign_refusal_rate=0.0)
    assert fast["direct_asr"] < slow["direct_asr"]
    assert pick_default(grid, table)["chosen"] == "slow"


def test_an_incomplete_sweep_is_provisional_and_none_eligible_keeps_the_default(tmp_path):
    from safealign.pipelines.sweep_rule import format_pick, pick_default

    result = pick_default(_grid(tmp_path), _table(_row("only", 2e-3, 0.8, 0.0, (0.0, -0.1, 0.1), seeds=1)))
    assert not result["complete"] and result["chosen"] is None
    printed = format_pick(result)
    assert "PROVISIONAL" in printed and "pick: none" in printed and "default stays" in printed


def test_pick_needs_dpo_and_e_dpo_and_the_base_figures(tmp_path):
    from safealign.pipelines.sweep_rule import pick_default

    grid = _grid(tmp_path)
    with pytest.raises(UserError, match="needs variants dpo and e-dpo"):
        pick_default(grid, {**_table(), "variants": ["dpo", "safedpo"]})
    with pytest.raises(UserError, match="not recorded yet"):
        pick_default(grid, {**_table(), "base": {}})


def test_pick_is_a_read_only_mode_of_the_command(tmp_path, capsys):
    from safealign.cli import main

    _grid(tmp_path)
    assert main(["sweep", str(tmp_path / "grid.yaml"), "--pick", "--table"]) == 2
    assert "--pick only reads the finished cells" in capsys.readouterr().err


def test_the_learning_rate_tie_break_reads_the_rate_each_setting_trains_with_however_the_axis_is_spelled(tmp_path):
    from safealign.pipelines.sweep import load_grid
    from safealign.pipelines.sweep_rule import pick_default

    path = tmp_path / "grid.yaml"
    path.write_text(f"output_dir: {tmp_path}\ndemo: {{extra_benign: [builtin:untuned_benign]}}\n"
                    "axes: {train.learning_rate: [2.0e-3, 5.0e-4]}\nseeds: [0, 1]\n")
    grid = load_grid(path)
    hi, lo = (_row(name, lr, 0.30, 0.04, (0.0, -0.1, 0.1)) for name, lr in (("hi", 2e-3), ("lo", 5e-4)))
    for row, lr in ((hi, 2e-3), (lo, 5e-4)):
        row["setting"] = {"train.learning_rate": lr}  # the grid's own spelling of the axis
    assert pick_default(grid, _table(hi, lo))["chosen"] == "lo"  # equal ASR and refusal: the lower rate


def test_a_one_seed_interval_claims_nothing(tmp_path):
    """With one shared seed the E-DPO − DPO interval is over prompts only: no "beats" claim either way."""
    from safealign.pipelines.sweep_rule import format_pick, pick_default

    one = _row("one", 2e-3, 0.30, 0.04, (-0.20, -0.30, -0.10), seeds=1)
    one["differences"][0]["metrics"]["direct_asr"]["seeds"] = 1
    two = _row("two", 5e-4, 0.30, 0.04, (+0.20, +0.10, +0.30))
    two["differences"][0]["metrics"]["direct_asr"]["seeds"] = 2
    result = pick_default(_grid(tmp_path), _table(one, two))
    by_name = {r["name"]: r for r in result["settings"]}
    assert not by_name["one"]["e_beats_dpo"] and not by_name["one"]["dpo_beats_e"]
    assert by_name["two"]["dpo_beats_e"]
    line = next(x for x in format_pick(result).splitlines() if x.startswith("one"))
    assert "n/a (1 seed: prompt-only interval)" in line and "yes" not in line.split("]")[-1]


def test_pick_refuses_a_view_of_the_grid_naming_its_overrides(tmp_path, capsys):
    """The rule is defined on the grid file's settings and seeds: a verdict on fewer would read as final."""
    from safealign.cli import main
    from safealign.pipelines.sweep import load_grid
    from safealign.pipelines.sweep_rule import pick_default

    _grid(tmp_path)
    path = str(tmp_path / "grid.yaml")
    assert main(["sweep", path, "--pick", "seeds=[0]", "axes.learning_rate=[5.0e-4]"]) == 2
    err = capsys.readouterr().err
    assert "seeds=[0]" in err and "axes.learning_rate=[5.0e-4]" in err and "whole grid" in err
    with pytest.raises(UserError, match=r"seeds=\[0\]"):
        pick_default(load_grid(path, ["seeds=[0]"]), _table(_row("a", 2e-3, 0.3, 0.04, (0.0, -0.1, 0.1))))
    # output_dir= names where the grid's cells are, not which: the rule runs (and here finds no base figures)
    assert main(["sweep", path, "--pick", f"output_dir={tmp_path}"]) == 2
    assert "not recorded yet" in capsys.readouterr().err


def test_a_diverged_cell_is_counted_and_does_not_keep_the_pick_provisional(tmp_path):
    from safealign.pipelines.sweep_rule import format_pick, pick_default

    grid = _grid(tmp_path)
    diverged = {**_row("slow", 5e-4, 0.30, 0.04, (0.0, -0.1, 0.1)), "diverged": {"e-dpo": [{"seed": 1, "step": 7}]}}
    diverged["seeds_finished"] = {"dpo": 2, "e-dpo": 1}
    result = pick_default(grid, _table(_row("fast", 2e-3, 0.35, 0.04, (0.0, -0.1, 0.1)), diverged))
    assert result["complete"] and result["chosen"] == "slow"
    assert {r["name"]: r["diverged"] for r in result["settings"]} == {"fast": {}, "slow": {"e-dpo": 1}}
    printed = format_pick(result)
    assert "PROVISIONAL" not in printed and "1/2 (1 diverged)" in printed and "1 cell diverged" in printed

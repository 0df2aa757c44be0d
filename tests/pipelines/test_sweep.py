"""``safealign sweep`` end to end on the tiny random model: 2 settings × 2 variants × 2 seeds, resumed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

GRID = """
output_dir: {out}
demo:
  model: tiny-random
  harmful_train: 4
  benign_train: 2
  borderline_train: 0
  harmful_test: 3
  benign_test: 2
  borderline_test: 0
  pair_max_new_tokens: 3
  eval_max_new_tokens: 3
  train_batch_size: 4
  templates: [refusal_suppression]
  entanglement_every: 0
axes:
  beta: [0.1, 0.5]
variants: [dpo, e-dpo]
seeds: [0, 1]
resamples: 200
"""


def printed_table(table):
    from safealign.pipelines.sweep import format_table

    return format_table(table)


@pytest.fixture()
def grid_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(out=tmp_path / "sweep"))
    return path


def test_sweep_end_to_end_and_resume_skips_finished_cells(grid_file, tmp_path, monkeypatch, capsys):
    from safealign.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", str(grid_file)]) == 0
    table = json.loads((out / "tables" / "grid.json").read_text())
    assert table["computed"] == 8 and table["skipped"] == 0
    assert [row["name"] for row in table["settings"]] == ["beta=0.1", "beta=0.5"]
    for row in table["settings"]:
        assert row["cells_finished"] == 8 // 2 and set(row["means"]) == {"dpo", "e-dpo"}
        assert [(d["a"], d["b"]) for d in row["differences"]] == [("e-dpo", "dpo")]  # the default comparison
        direct = row["differences"][0]["metrics"]["direct_asr"]
        # the tiny model's outcomes may not vary at all (every one equal: the exact bound over the 3 prompts)
        assert direct["seeds"] == 2 and direct["n_prompts"] == 3
        assert "random-effects t" in direct["interval"] or "exact binomial over the 3 prompts" in direct["interval"]
        assert direct["ci95"][0] <= direct["diff"] <= direct["ci95"][1]
        mean_diff = row["means"]["e-dpo"]["direct_asr"] - row["means"]["dpo"]["direct_asr"]
        assert direct["diff"] == pytest.approx(mean_diff)  # every prompt scored: difference of the means
    for row in table["settings"]:  # the refusal margin compares per-prompt numbers the same way
        margin = row["differences"][0]["metrics"]["heldout_refusal_margin"]
        assert margin["n_prompts"] == 3 and margin["ci95"][0] <= margin["diff"] <= margin["ci95"][1]
    assert set(table["base"]) >= {"direct_asr", "heldout_refusal_margin"}  # the base model, evaluated once
    assert "(base model)" in printed_table(table)
    finished = sorted(out.glob("cells/*/*/cell.json"), key=lambda p: p.stat().st_mtime_ns)
    # seeds outermost: all four seed-0 cells finish before any seed-1 cell
    assert [p.parent.name.endswith("seed0") for p in finished] == [True] * 4 + [False] * 4
    cell = out / "cells" / "beta=0.5" / "e-dpo-seed1"
    assert (cell / "cell.json").exists() and (out / "pairs.jsonl").exists()
    config = (cell / "train" / "config.yaml").read_text()
    assert "beta: 0.5" in config and "seed: 1" in config and "safety_prefix" in config
    assert not list((cell / "train").glob("checkpoint-*"))  # a finished cell keeps its adapter, not its optimizer
    assert list((out / "reference_cache").glob("*.safetensors"))  # shared by the cells, not per cell
    printed = capsys.readouterr().out
    assert "direct_asr" in printed and "e-dpo − dpo" in printed
    assert "| setting | dpo | e-dpo |" in (out / "tables" / "grid.md").read_text()

    # the cells' answers judged again (safealign judge records) join the table as "<metric>@<label>": judged by the
    # same refusal judge under another label, every number equals the recorded judge's
    from safealign.pipelines.judge_records import judge_records
    from safealign.pipelines.sweep import load_grid, sweep_table

    for run in [*out.glob("cells/*/*/eval/jailbreak"), out / "before" / "jailbreak"]:
        judge_records(run, "refusal", label="same")
    for cell_name in ("dpo-seed0", "e-dpo-seed0", "e-dpo-seed1"):  # a judge run on some cells only
        judge_records(out / "cells" / "beta=0.1" / cell_name / "eval" / "jailbreak", "refusal", label="some")
    judged = sweep_table(load_grid(grid_file))
    partial = judged["settings"][0]
    assert partial["seed_counts"]["dpo"] == {**partial["seed_counts"]["dpo"], "direct_asr@some": 1, "direct_asr": 2}
    assert partial["differences"][0]["seeds"] == 2 and partial["differences"][0]["metrics"]["direct_asr@some"][
        "seeds"] == 1
    printed = printed_table(judged)
    some = printed.rsplit("direct_asr@some", 1)[1].split("\n\n")[0]  # the table says which are partial
    assert some.count("(1 seed)") == 2 and "(2 seeds)" not in some  # dpo's mean and the difference, one row
    assert "direct_asr@some: on 3 of 8 finished cells; missing on the others, for this metric alone" in printed
    assert judged["base"]["direct_asr@same"] == judged["base"]["direct_asr"]
    for row in judged["settings"]:
        for variant in ("dpo", "e-dpo"):
            assert row["means"][variant]["template_asr@same"] == pytest.approx(row["means"][variant]["template_asr"])
        metrics = row["differences"][0]["metrics"]
        assert metrics["direct_asr@same"] == metrics["direct_asr"]

    # resume: nothing finished is recomputed (no model load, no training, no evaluation) ...
    _forbid_computing(monkeypatch, "a finished cell was recomputed")
    assert main(["sweep", str(grid_file)]) == 0
    resumed = json.loads((out / "tables" / "grid.json").read_text())
    assert (resumed["computed"], resumed["skipped"]) == (0, 8)
    assert [r["differences"] for r in resumed["settings"]] == [r["differences"] for r in judged["settings"]]

    # ... and a cell whose record is gone is the only one redone
    monkeypatch.undo()
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    (cell / "cell.json").unlink()
    assert main(["sweep", str(grid_file)]) == 0
    again = json.loads((out / "tables" / "grid.json").read_text())
    assert (again["computed"], again["skipped"]) == (1, 7) and (cell / "cell.json").exists()

    # a cell finished by an earlier code version, before a setting existed, is still finished while that setting
    # is at its default (the sweep runs across sessions while the code grows)
    recorded = json.loads((cell / "fingerprint.json").read_text())
    del recorded["values"]["train.optimizer"]
    from safealign.io.rundir import Fingerprint

    older = Fingerprint("sweep-cell", recorded["values"])
    top = json.loads((out / "fingerprint.json").read_text())  # and the sweep directory's own fingerprint
    del top["values"]["eval.defenses"]
    top["digest"] = Fingerprint("sweep", top["values"]).digest
    (out / "fingerprint.json").write_text(json.dumps(top))
    recorded["digest"] = older.digest
    (cell / "fingerprint.json").write_text(json.dumps(recorded))
    finished = json.loads((cell / "cell.json").read_text())
    (cell / "cell.json").write_text(json.dumps({**finished, "fingerprint": older.digest}))
    assert main(["sweep", str(grid_file)]) == 0
    assert json.loads((out / "tables" / "grid.json").read_text())["skipped"] == 8

    # a changed training setting never mixes into finished cells: the first cell's fingerprint refuses it
    assert main(["sweep", str(grid_file), "epochs=2"]) == 2
    assert "train.num_train_epochs" in capsys.readouterr().err
    # nor does a table read under other settings present these cells as theirs: another shared setting is refused,
    # and cells trained under other training settings are not finished for that table
    assert main(["sweep", str(grid_file), "eval_max_new_tokens=200", "--table"]) == 2
    assert "eval.generation.max_new_tokens" in capsys.readouterr().err
    other = sweep_table(load_grid(grid_file, ["epochs=2"]))
    assert [row["cells_finished"] for row in other["settings"]] == [0, 0]


def test_grid_errors_name_the_file_and_key(tmp_path):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("axes: {harmful_test: [2, 4]}\n")
    with pytest.raises(ValueError, match=r"grid.yaml: axes.harmful_test: a sweep varies training only"):
        load_grid(path)
    path.write_text("axes: {beta: [0.1]}\nvariants: [dpo, e-ddpo]\n")
    with pytest.raises(ValueError, match="grid.yaml: variants"):
        load_grid(path)
    path.write_text("axes: {beta: 0.1}\n")
    with pytest.raises(ValueError, match=r"axes.beta: expected a non-empty list"):
        load_grid(path)
    path.write_text("demo: {output_dir: x}\n")
    with pytest.raises(ValueError, match="set by the sweep"):
        load_grid(path)
    path.write_text("axes: {train.reference.transform_params.prefix: [a, b]}\n")  # the variant sets it
    with pytest.raises(ValueError, match=r"axes.train.reference.transform_params.prefix: every cell sets"):
        load_grid(path)
    path.write_text("axes: {beta: [0]}\n")  # every setting's config is validated before a model loads
    with pytest.raises(ValueError, match="beta"):
        load_grid(path)


def test_command_line_overrides_reach_the_grid_and_the_base_config(tmp_path):
    from safealign.pipelines.sweep import load_grid

    grid = load_grid("configs/sweep/e_effect.yaml", ["seeds=[0,1]", f"output_dir={tmp_path}", "axes.beta=[0.5]",
                                                     "model=tiny-random", "harmful_test=2"])
    assert grid.seeds == [0, 1] and grid.output_dir == str(tmp_path) and len(grid.settings()) == 3 * 1 * 2
    config = grid.setting_config(grid.settings()[0])
    assert (config.model, config.harmful_test, config.train.losses[0].name) == ("tiny-random", 2, "dpo")
    assert config.train.reference.cache_dir == str(tmp_path / "reference_cache")


def test_a_behavior_selection_no_cell_reads_is_refused_when_the_grid_loads(tmp_path):
    from safealign.errors import UserError
    from safealign.pipelines.sweep import load_grid

    with pytest.raises(UserError, match=r"eval.behaviors.limit=5: .*harmful_test"):
        load_grid("configs/sweep/e_effect.yaml", [f"output_dir={tmp_path}", "eval.behaviors.limit=5"])


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "sweep").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_committed_grid_loads(path):
    from safealign.pipelines.sweep import load_grid

    assert load_grid(path).settings()  # every setting's config is checked as the grid loads


def test_the_shipped_grid_is_the_issue_grid():
    from safealign.pipelines.sweep import load_grid

    grid = load_grid("configs/sweep/e_effect.yaml")
    assert grid.axes == {"nll_weight": [0, 0.2, 1], "beta": [0.1, 0.5], "learning_rate": [5e-4, 2e-3]}
    assert grid.seeds == [0, 1, 2, 3, 4] and grid.variants == ["dpo", "e-dpo"] and len(grid.settings()) == 12


def test_the_safety_prefix_is_an_axis_and_reaches_only_the_e_variant(tmp_path):
    from pathlib import Path

    from safealign.pipelines.demo_config import train_config
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("axes: {prefix: [responsible, community_guidelines]}\n")
    grid = load_grid(path)
    prefixes = []
    for setting in grid.settings():
        config = grid.setting_config(setting)
        e_dpo = train_config(config, "e-dpo", Path("pairs.jsonl"), tmp_path / "x")
        dpo = train_config(config, "dpo", Path("pairs.jsonl"), tmp_path / "y")
        prefixes.append(e_dpo.reference.transform_params["prefix"])
        assert dpo.reference.transform == "identity" and "prefix" not in dpo.reference.transform_params
    assert prefixes == ["responsible", "community_guidelines"]


def test_a_methods_grid_shares_the_directory_and_prints_a_method_per_row(grid_file, tmp_path, capsys):
    """A second grid on the same directory (one setting of the first, more methods) computes only its new
    cells, writes its own table, and compares every method with DPO; --table prints partial tables."""
    from safealign.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", str(grid_file), "seeds=[0]", "axes.beta=[0.1]", "variants=[dpo]"]) == 0
    methods = tmp_path / "methods.yaml"
    methods.write_text(grid_file.read_text().replace("beta: [0.1, 0.5]", "beta: [0.1]")
                       .replace("variants: [dpo, e-dpo]", "variants: [dpo, safedpo, derta]\n"
                                "compare: [[safedpo, dpo], [derta, dpo]]").replace("seeds: [0, 1]", "seeds: [0]"))
    capsys.readouterr()
    assert main(["sweep", str(methods), "--table"]) == 0  # before: only the shared DPO cell is finished
    partial = capsys.readouterr().out
    assert "1/3 cells finished" in partial and "| method |" not in partial
    written = json.loads((out / "tables" / "methods.json").read_text())  # --table also writes what it printed
    assert written["progress"]["finished"] == 1 and "computed" not in written
    assert main(["sweep", str(methods)]) == 0
    table = json.loads((out / "tables" / "methods.json").read_text())
    assert (table["computed"], table["skipped"]) == (2, 1)  # the DPO cell came from the first grid
    # each grid has its own table; the first run, a view of its grid (seeds, axes, variants overridden), wrote none
    assert not (out / "tables" / "grid.json").exists()
    row = table["settings"][0]
    assert row["seeds_finished"] == {"dpo": 1, "safedpo": 1, "derta": 1}
    for variant in ("dpo", "safedpo", "derta"):
        low, high = row["ci95"][variant]["direct_asr"]
        assert low <= row["means"][variant]["direct_asr"] <= high
    assert [(d["a"], d["b"]) for d in row["differences"]] == [("safedpo", "dpo"), ("derta", "dpo")]
    for d in row["differences"]:
        assert d["metrics"]["direct_asr"]["diff"] == pytest.approx(
            row["means"][d["a"]]["direct_asr"] - row["means"]["dpo"]["direct_asr"])
    md = (out / "tables" / "methods.md").read_text()
    assert "| method | seeds | direct_asr |" in md and "| safedpo − dpo |" in md and "| (base model) |" in md
    capsys.readouterr()
    assert main(["sweep", str(methods), "--table", "--markdown", "--metrics", "benign_refusal_rate,direct_asr"]) == 0
    chosen = capsys.readouterr().out
    assert "| method | seeds | benign_refusal_rate | direct_asr |" in chosen and "template_asr" not in chosen
    assert main(["sweep", str(methods), "--table", "--metrics", "direct_asr,asr_typo"]) == 2
    assert "asr_typo not recorded" in capsys.readouterr().err
    before = (out / "tables" / "methods.json").read_text()
    assert main(["sweep", str(methods), "--table", "resamples=100"]) == 0  # a view of the directory
    assert "methods.json is left as the grid file defines it" in capsys.readouterr().out
    assert (out / "tables" / "methods.json").read_text() == before  # what `safealign report` shows is the grid's
    assert main(["sweep", str(methods), "resamples=100"]) == 0  # a run of a view: nothing to compute, no table
    assert "methods.json is left as the grid file defines it" in capsys.readouterr().out
    assert (out / "tables" / "methods.json").read_text() == before


def test_compare_and_variants_are_checked(tmp_path):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("variants: [dpo, self-reminder]\n")  # an inference-time method trains nothing: no cell
    with pytest.raises(ValueError, match="variants: a list of distinct training methods"):
        load_grid(path)
    for compare in ("[[safedpo, dpo]]", "[[dpo, dpo]]", "[dpo, e-dpo]"):
        path.write_text(f"variants: [dpo, e-dpo]\ncompare: {compare}\n")
        with pytest.raises(ValueError, match=r"grid.yaml: compare: a list of \[a, b\] pairs"):
            load_grid(path)
    path.write_text("variants: [dpo, e-dpo, safedpo, e-safedpo]\n")
    assert load_grid(path).comparisons() == [("e-dpo", "dpo"), ("safedpo", "dpo"), ("e-safedpo", "dpo"),
                                             ("e-safedpo", "safedpo")]  # the demo's pairs by default


def test_the_methods_grid_extends_the_e_effect_directory(tmp_path):
    """safety_methods.yaml reuses e_effect.yaml's cells: same base config (directory fingerprint) and a
    setting that is one of e_effect's, so its DPO and E-DPO cells are the same folders and fingerprints."""
    from safealign.pipelines.sweep import _cell_fingerprint, cell_dir, check_sweep_dir, load_grid

    effect, methods = load_grid("configs/sweep/e_effect.yaml"), load_grid("configs/sweep/safety_methods.yaml")
    assert methods.output_dir == effect.output_dir and len(methods.settings()) == 1
    check_sweep_dir(load_grid("configs/sweep/e_effect.yaml", [f"output_dir={tmp_path}"]))
    check_sweep_dir(load_grid("configs/sweep/safety_methods.yaml", [f"output_dir={tmp_path}"]))  # no refusal
    setting = methods.settings()[0]
    assert setting in effect.settings()
    for variant in ("dpo", "e-dpo"):
        assert cell_dir(methods, setting, variant, 0) == cell_dir(effect, setting, variant, 0)
        mine, theirs = methods.setting_config(setting), effect.setting_config(setting)
        assert _cell_fingerprint(mine, variant, 0, "p").digest == _cell_fingerprint(theirs, variant, 0, "p").digest


def test_a_prefix_axis_shares_the_cells_the_prefix_does_not_change(tmp_path):
    """DPO ignores the safety prefix: one DPO cell per seed serves every prefix of the axis (same folder and
    fingerprint), and E-DPO at the default prefix is the cell of a grid with no prefix axis."""
    from safealign.pipelines.sweep import _cell_fingerprint, cell_dir, cell_setting, load_grid

    path = tmp_path / "grid.yaml"
    path.write_text(f"output_dir: {tmp_path}\naxes: {{beta: [0.1], prefix: [community_guidelines, responsible]}}\n")
    (plain_path := tmp_path / "plain.yaml").write_text(f"output_dir: {tmp_path}\naxes: {{beta: [0.1]}}\n")
    grid, plain = load_grid(path), load_grid(plain_path)
    (default, responsible), (no_axis,) = grid.settings(), plain.settings()
    assert cell_setting(responsible, "e-dpo") == {"beta": 0.1, "prefix": "responsible"}
    assert cell_setting(responsible, "dpo") == cell_setting(default, "e-dpo") == {"beta": 0.1}
    shared = cell_dir(plain, no_axis, "dpo", 0)
    assert cell_dir(grid, responsible, "dpo", 0) == cell_dir(grid, default, "dpo", 0) == shared
    assert cell_dir(grid, default, "e-dpo", 0) == cell_dir(plain, no_axis, "e-dpo", 0)
    assert cell_dir(grid, responsible, "e-dpo", 0).parent.name == "beta=0.1,prefix=responsible"

    def digest(g, setting, variant):
        return _cell_fingerprint(g.setting_config(setting), variant, 0, "p").digest

    assert digest(grid, responsible, "dpo") == digest(grid, default, "dpo") == digest(plain, no_axis, "dpo")
    assert digest(grid, default, "e-dpo") == digest(plain, no_axis, "e-dpo")
    assert digest(grid, responsible, "e-dpo") != digest(grid, default, "e-dpo")


def test_a_prefix_grid_computes_only_the_new_e_cells(grid_file, tmp_path):
    from safealign.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", str(grid_file), "seeds=[0]", "axes.beta=[0.1]"]) == 0  # DPO and E-DPO, default prefix
    prefixes = tmp_path / "prefixes.yaml"
    axis = "beta: [0.1]\n  prefix: [community_guidelines, responsible]"
    prefixes.write_text(grid_file.read_text().replace("beta: [0.1, 0.5]", axis).replace("seeds: [0, 1]", "seeds: [0]"))
    assert main(["sweep", str(prefixes)]) == 0
    table = json.loads((out / "tables" / "prefixes.json").read_text())
    assert (table["computed"], table["skipped"]) == (1, 2)  # E-DPO with the new prefix; DPO once for both rows
    rows = {row["name"]: row for row in table["settings"]}
    assert set(rows) == {"beta=0.1,prefix=community_guidelines", "beta=0.1,prefix=responsible"}
    dpo = [row["means"]["dpo"] for row in rows.values()]
    assert dpo[0] == dpo[1] and all(row["cells_finished"] == 2 for row in rows.values())
    assert (out / "cells" / "beta=0.1,prefix=responsible" / "e-dpo-seed0" / "cell.json").exists()
    assert not (out / "cells" / "beta=0.1,prefix=responsible" / "dpo-seed0").exists()
    progress = table["progress"]  # distinct cells: the shared DPO cell counts once
    assert (progress["cells"], progress["finished"]) == (3, 3) and progress["median_cell_seconds"] > 0
    from safealign.pipelines.sweep import progress_line

    assert progress_line(table).startswith("3/3 cells finished (") and "left" not in progress_line(table)
    assert progress["recorded_cell_seconds"] >= 2 * progress["median_cell_seconds"]  # the median and the largest
    table["progress"]["finished"] = 1  # as if two cells were still to come
    assert "about " in progress_line(table) and "h of one worker left" in progress_line(table)

    from safealign.report import build_report

    assert main(["sweep", str(grid_file), "--table"]) == 0  # the first grid's table (its first run was a view)
    html, md = build_report(out)  # a sweep directory's report: every grid's table, a forest plot per metric
    text = html.read_text()
    assert "Sweep: prefixes" in text and "Sweep: grid" in text and "data:image/png;base64," in text
    assert "| beta=0.1,prefix=responsible | e-dpo − dpo |" in md.read_text()


def test_the_prefix_grid_reuses_the_e_effect_cells():
    from safealign.pipelines.sweep import cell_dir, load_grid

    effect, prefixes = load_grid("configs/sweep/e_effect.yaml"), load_grid("configs/sweep/e_prefixes.yaml")
    assert prefixes.output_dir == effect.output_dir
    assert prefixes.axes["prefix"] == ["community_guidelines", "responsible", "wellbeing", "safety_legality"]
    def cells(grid):
        return {cell_dir(grid, s, v, seed) for s in grid.settings() for v in grid.variants for seed in grid.seeds}

    effect_cells, mine = cells(effect), cells(prefixes)
    assert len(mine) == 3 * 5 + 5 + 5 and len(mine - effect_cells) == 15  # only E-DPO with the three other prefixes


TEXTS = ["Line one.\nLine two:", 'Say "no" to harm.', "Réponds de façon sûre — 安全", "it's 'quoted'", "null",
         "a/b/../c"]


def test_text_values_reach_the_cells_as_written(tmp_path):
    """A grid's text (a prefix given as its text, stop strings, a path) arrives in every cell's config exactly as
    YAML read it: no JSON escapes (\\n, \\", \\u00e9) and no quotes taken off or kept."""
    from safealign.pipelines.sweep import load_grid

    # one word as a prefix ends with its separator: a lone word is refused as a misspelt built-in prefix name
    prefixes = [text + " " if text == "null" else text for text in TEXTS]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"demo": {"model": "tiny-random", "eval": {"generation": {"stop": TEXTS}},
                                             "extra_benign": ["données/sûr.json"]},
                                    "axes": {"prefix": prefixes}}, allow_unicode=True), encoding="utf-8")
    grid = load_grid(path)
    configs = [grid.setting_config(setting) for setting in grid.settings()]
    assert [c.prefix for c in configs] == prefixes
    assert all(c.eval.generation.stop == TEXTS and c.extra_benign == ["données/sûr.json"] for c in configs)


def test_numbers_and_names_build_the_configs_the_text_overrides_built():
    """Typed values give the shipped grids the very configs (so the cells' fingerprints) that the text overrides of
    earlier versions gave: the running sweep's finished cells stay finished."""
    from safealign.config import to_dict
    from safealign.pipelines.demo_config import load_demo_config
    from safealign.pipelines.sweep import _flatten, load_grid

    for name in ("e_effect", "e_prefixes", "safety_methods"):
        grid = load_grid(f"configs/sweep/{name}.yaml")
        demo = _flatten(yaml.safe_load(open(f"configs/sweep/{name}.yaml"))["demo"])
        for setting in grid.settings():
            old = load_demo_config([*(f"{k}={json.dumps(v)}" for k, v in [*demo.items(), *setting.items()]),
                                    f"output_dir={grid.output_dir}", f"variants={json.dumps(grid.variants)}",
                                    f"train_seeds={json.dumps(grid.seeds)}"])
            new = grid.setting_config(setting)
            new.train.reference.cache_dir = old.train.reference.cache_dir  # the sweep's own, set after loading
            assert to_dict(new) == to_dict(old)


def test_a_value_yaml_reads_as_text_is_a_number_or_an_error_naming_the_grid(tmp_path):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("demo: {model: tiny-random}\naxes: {learning_rate: [5e-4, 1E3], beta: [1e-1]}\n")
    grid = load_grid(path)  # YAML 1.1 reads 5e-4 as text; a grid means the number
    assert grid.axes == {"learning_rate": [5e-4, 1e3], "beta": [0.1]}
    assert grid.setting_config(grid.settings()[0]).train.learning_rate == 5e-4
    path.write_text("demo: {model: tiny-random}\naxes: {learning_rate: [fast]}\n")
    with pytest.raises(ValueError, match=r"grid.yaml: axes: learning_rate: expected a number, got 'fast'"):
        load_grid(path)
    path.write_text("demo: {model: tiny-random}\naxes: {train.learning_rate: [fast]}\n")
    with pytest.raises(ValueError, match=r"grid.yaml: axes: invalid config: .*learning_rate") as info:
        load_grid(path)
    assert "command-line" not in str(info.value)


@pytest.mark.parametrize(("demo", "overrides", "message"), [
    ("beta: 0.3", [], r"grid.yaml: demo: beta is set in every cell by the axis beta.*axes.beta="),
    ("train: {losses.0.params.beta: 0.3}", [], "train.losses.0.params.beta is set in every cell by the axis beta"),
    ("", ["train.learning_rate=1e-3"], r"command line: train.learning_rate is set in every cell by the axis "
                                       r"learning_rate.*axes.learning_rate="),
    ("", ["train.lora.alpha=8"], "by the axis lora_r"),
    ("", ["train_seeds=[0,1]"], r"train_seeds is set by the sweep from its seeds; give seeds=\[...\]"),
])
def test_a_value_an_axis_or_the_seeds_would_replace_is_refused(tmp_path, demo, overrides, message):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text(f"demo: {{model: tiny-random{', ' + demo if demo else ''}}}\n"
                    "axes: {beta: [0.1, 0.5], learning_rate: [1.0e-3], lora_r: [4]}\n")
    with pytest.raises(ValueError, match=message):
        load_grid(path, overrides)


def test_values_an_axis_keeps_are_accepted(tmp_path):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("demo: {model: tiny-random, beta: 0.3, nll_weight: 0}\naxes: {nll_weight: [0, 1]}\n")
    with pytest.raises(ValueError, match="nll_weight is set in every cell by the axis nll_weight"):
        load_grid(path)
    path.write_text("demo: {model: tiny-random, beta: 0.3, epochs: 2}\naxes: {nll_weight: [0, 1]}\n")
    grid = load_grid(path)  # the NLL weight replaces the loss but keeps its β
    assert [c.train.losses[0].params["beta"] for c in map(grid.setting_config, grid.settings())] == [0.3, 0.3]
    # a section around the axis: the axis sets its one value, the rest of the section stands
    path.write_text("demo: {model: tiny-random, train: {losses: [{name: dpo, weight: 2.0, params: {beta: 0.3}}]}}\n"
                    "axes: {beta: [0.2]}\n")
    (loss,) = load_grid(path).setting_config({"beta": 0.2}).train.losses
    assert (loss.name, loss.weight, loss.params["beta"]) == ("dpo", 2.0, 0.2)


def test_a_text_value_is_one_short_folder_and_simple_values_keep_their_names(tmp_path):
    from safealign.pipelines.sweep import cell_dir, load_grid, setting_name

    assert setting_name({"nll_weight": 0, "beta": 0.1, "learning_rate": 0.0005}) == \
        "nll_weight=0,beta=0.1,learning_rate=0.0005"
    assert setting_name({"prefix": "community_guidelines", "learning_rate": 1e-05}) == \
        "prefix=community_guidelines,learning_rate=1e-05"
    long = "Refuse/harm. " * 40  # '/' would nest folders; 520 characters would pass a name's 255-byte limit
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), "demo": {"model": "tiny-random"},
                                    "axes": {"prefix": [long, "Réponds.", "Please answer safely.", "a/b"]}},
                                   allow_unicode=True))
    grid = load_grid(path)
    folders = [cell_dir(grid, s, "e-dpo", 0).parent for s in grid.settings()]
    assert all(f.parent == tmp_path / "out" / "cells" for f in folders)  # one level each
    assert all(len(f.name.encode()) < 80 for f in folders) and len(set(folders)) == 4
    assert folders[0].name.startswith("prefix=Refuse-harm-Refuse-harm") and folders[3].name.startswith("prefix=a-b-")
    # a text one folder can hold keeps the name earlier versions gave it, so their finished cells are found again
    assert [f.name for f in folders[1:3]] == ["prefix=Réponds.", "prefix=Please answer safely."]
    folders[0].mkdir(parents=True)  # a legal name
    assert [cell_dir(load_grid(path), s, "e-dpo", 0).parent for s in grid.settings()] == folders  # stable


def test_any_prefix_grid_shares_the_directory_and_fresh_warns_it_deletes_every_grid(tmp_path):
    """The prefix is each cell's (its fingerprint holds it): a prefix grid starting at another prefix shares the
    directory; the directory's recorded fingerprint (with the default prefix) is unchanged, so it resumes."""
    from safealign.io.rundir import read_fingerprint
    from safealign.pipelines.sweep import check_sweep_dir, load_grid, sweep_fingerprint

    out = [f"output_dir={tmp_path}"]
    check_sweep_dir(load_grid("configs/sweep/e_effect.yaml", out))
    (tmp_path / "cells").mkdir()  # results: a later grid is checked against the recorded fingerprint
    recorded = read_fingerprint(tmp_path)
    assert recorded.values["prefix"] == "community_guidelines"
    reordered = load_grid("configs/sweep/e_prefixes.yaml", [*out, "axes.prefix=[wellbeing,community_guidelines]"])
    assert sweep_fingerprint(reordered).digest == recorded.digest
    check_sweep_dir(reordered)  # no refusal
    with pytest.raises(ValueError, match="--fresh \\(which deletes the whole sweep directory: the cells of every grid"):
        check_sweep_dir(load_grid("configs/sweep/e_effect.yaml", [*out, "harmful_test=2"]))


def test_a_metric_on_fewer_seeds_than_finished_is_marked():
    from safealign.pipelines.sweep import format_table

    diff = {"diff": -0.1, "ci95": [-0.2, 0.0], "seeds": 2}
    row = {"name": "beta=0.1", "setting": {"beta": 0.1}, "cells_finished": 6, "cells": 6,
           "seeds_finished": {"dpo": 3, "e-dpo": 3},
           "means": {"dpo": {"direct_asr": 0.5, "direct_asr@hb": 0.4},
                     "e-dpo": {"direct_asr": 0.4, "direct_asr@hb": 0.2}},
           "seed_counts": {"dpo": {"direct_asr": 3, "direct_asr@hb": 1},
                           "e-dpo": {"direct_asr": 3, "direct_asr@hb": 2}},
           "ci95": {}, "differences": [{"a": "e-dpo", "b": "dpo", "seeds": 3,
                                        "metrics": {"direct_asr": {**diff, "seeds": 3}, "direct_asr@hb": diff}}]}
    table = {"output_dir": "x", "seeds": [0, 1, 2], "variants": ["dpo", "e-dpo"], "compared": [["e-dpo", "dpo"]],
             "settings": [row, {**row, "name": "beta=0.5"}], "base": {}}
    for markdown in (False, True):
        text = format_table(table, markdown=markdown)
        full, partial = text.split("direct_asr@hb")
        full = full.split("direct_asr", 1)[1]  # the block of the metric every cell has: unmarked
        assert "0.500" in full and "seed" not in full and "(3 seeds)" not in partial
        assert "0.400 (1 seed)" in partial and "0.200 (2 seeds)" in partial  # dpo's and e-dpo's means
        assert partial.count("(2 seeds)") == 2 * 2  # e-dpo's mean and the difference, on both rows
        methods = format_table({**table, "settings": [row]}, markdown=markdown)  # a method per row
        assert "(1 seed)" in methods and "0.500 (" not in methods
    # dpo finished seeds 0-2, e-dpo 2-4: the means are over 3 seeds each, the difference over the one both finished
    disjoint = {**row, "differences": [{"a": "e-dpo", "b": "dpo", "seeds": 1,
                                        "metrics": {"direct_asr": {**diff, "seeds": 1}}}]}
    for markdown in (False, True):
        for text in (format_table({**table, "settings": [disjoint, {**disjoint, "name": "b"}]}, markdown=markdown),
                     format_table({**table, "settings": [disjoint]}, markdown=markdown)):
            closing = "\\]" if markdown else "]"  # markdown escapes a "]" before "(": no link
            assert f"-0.100 [-0.200,+0.000{closing} (1 seed)" in text and "0.500 (" not in text


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_committed_sweep_resumes_in_a_clone_with_finished_cells_only(tmp_path, monkeypatch):
    """`git add` on a sweep directory takes its finished cells and results, never weights, locks or an unfinished
    cell; a clone of the commit resumes the sweep computing only what was not finished (safealign/io/committable.py)."""
    import subprocess

    from safealign.cli import main
    from safealign.io.committable import hold_back
    from safealign.pipelines import demo
    from safealign.pipelines.sweep import load_grid, run_sweep

    def git(*args, cwd):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                              capture_output=True, text=True).stdout

    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "grid.yaml").write_text(GRID.format(out="results/sweep").replace("[0.1, 0.5]", "[0.1]")
                                    .replace("seeds: [0, 1]", "seeds: [0]"))
    monkeypatch.chdir(repo)
    evaluate = demo.evaluate

    def interrupted(config, model, tokenizer, prompts, out, **kwargs):  # the e-dpo cell stops half-way
        if "e-dpo" in str(out):
            raise RuntimeError("interrupted")
        return evaluate(config, model, tokenizer, prompts, out, **kwargs)

    monkeypatch.setattr(demo, "evaluate", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_sweep(load_grid("grid.yaml"))
    cells = repo / "results" / "sweep" / "cells" / "beta=0.1"
    assert list((cells / "e-dpo-seed0" / "train" / "final").glob("*.safetensors"))  # trained, not evaluated
    for stray in (cells / "dpo-seed0" / "cell.json", repo / "results" / "sweep" / "shared.json"):  # write_atomic's
        stray.with_name(f"{stray.name}.4242-1.tmp").write_text("{}")  # temporary files, left by a killed writer
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "partial sweep", cwd=repo)
    tracked = git("ls-files", cwd=repo).split()
    assert "results/sweep/cells/beta=0.1/dpo-seed0/cell.json" in tracked
    assert "results/sweep/pairs.jsonl" in tracked and "results/sweep/before/figures.json" in tracked
    assert any(p.startswith("results/sweep/cells/beta=0.1/dpo-seed0/eval/") for p in tracked)
    assert not [p for p in tracked if "e-dpo-seed0" in p]  # unfinished: none of it
    assert not [p for p in tracked if p.endswith((".safetensors", ".lock", ".bin", ".tmp")) or "/workers/" in p
                or "reference_cache" in p]

    clone = tmp_path / "clone"
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    monkeypatch.chdir(clone)
    trained = []
    train_stage = demo.train_stage
    monkeypatch.setattr(demo, "evaluate", evaluate)
    monkeypatch.setattr(demo, "train_stage", lambda config, variant, *a, **k: trained.append(variant) or
                        train_stage(config, variant, *a, **k))
    assert main(["sweep", "grid.yaml"]) == 0  # the command: its lifetime lock (workers/) is gone when it ends
    sweep = clone / "results" / "sweep"
    table = json.loads((sweep / "tables" / "grid.json").read_text())
    assert trained == ["e-dpo"] and (table["computed"], table["skipped"]) == (1, 1)
    assert not list(sweep.rglob("*.lock"))

    # a worker killed after a part's last record but before it released the part's hold-back .gitignore: the next
    # run, finding the part finished, releases it, so git takes it (a finished part is never computed again)
    hold_back(sweep / "cells" / "beta=0.1" / "e-dpo-seed0")
    hold_back(sweep / "before")
    assert main(["sweep", "grid.yaml"]) == 0
    git("add", "-A", cwd=clone)
    tracked = git("ls-files", cwd=clone).split()
    assert "results/sweep/cells/beta=0.1/e-dpo-seed0/cell.json" in tracked
    assert not (sweep / "before" / ".gitignore").exists()  # (its files were committed: git keeps them either way)


EARLIER_GITIGNORE = """\
# Written by safealign (safealign/io/committable.py): inside a git repository `git add` takes this directory's
# results (configs, pairs, evaluation records, cell.json, tables) and leaves out what is large or local.
*.lock
.tmp-*
workers/
reference_cache/
teacher_cache/
checkpoint-*/
**/train/final/
*.safetensors
*.bin
*.pt
*.pth
*.gguf
"""


def test_a_sweep_started_by_earlier_code_gets_the_current_gitignore_and_a_users_own_is_kept(tmp_path):
    """A sweep directory outlives code versions: the .gitignore an earlier version wrote (which let write_atomic's
    temporary files into git) is replaced when a worker starts; one the user wrote is left as it is."""
    from safealign.io.committable import RESULTS_GITIGNORE, mark_results

    earlier, own = tmp_path / "earlier", tmp_path / "own"
    for folder, text in ((earlier, EARLIER_GITIGNORE), (own, EARLIER_GITIGNORE + "notes/\n")):
        folder.mkdir()
        (folder / ".gitignore").write_text(text)
        mark_results(folder)
    assert (earlier / ".gitignore").read_text() == RESULTS_GITIGNORE and "*.tmp\n" in RESULTS_GITIGNORE
    assert (own / ".gitignore").read_text() == EARLIER_GITIGNORE + "notes/\n"


def test_whole_number_floats_name_the_folders_their_ints_name():
    """``axes.nll_weight=[1.0]`` trains the cells of ``nll_weight: [1]`` (the same fingerprint): the same folders."""
    from safealign.pipelines.sweep import setting_name

    assert setting_name({"nll_weight": 1.0, "beta": 0.1, "learning_rate": 2e-3}) == \
        "nll_weight=1,beta=0.1,learning_rate=0.002"
    assert setting_name({"nll_weight": 0.0, "lora_r": 8, "x": -2.0}) == "nll_weight=0,lora_r=8,x=-2"
    # every other value keeps its text: the names earlier sweeps gave their cells
    assert setting_name({"a": 0.2, "b": 1e-05, "c": 1e16, "d": True, "e": "1.0"}) == \
        "a=0.2,b=1e-05,c=1e+16,d=True,e=1.0"


def test_an_axis_order_other_than_a_recorded_grids_is_warned(tmp_path, caplog):
    """Folders are named in axis order: a grid listing the axes of a grid recorded in the directory (its table) in
    another order names the same settings' cells differently, so it would compute them again."""
    import logging

    from safealign.pipelines.sweep import check_sweep_dir, load_grid

    out = [f"output_dir={tmp_path}"]
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "e_effect.json").write_text(json.dumps(
        {"name": "e_effect", "axes": {"nll_weight": [0, 1], "beta": [0.1], "learning_rate": [2e-3]}}))
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path), "demo": {"model": "tiny-random"},
                                    "axes": {"beta": [0.1], "nll_weight": [1], "prefix": ["responsible"]}}))
    with caplog.at_level(logging.WARNING):
        check_sweep_dir(load_grid(path))
    assert "mine.yaml: axes beta, nll_weight" in caplog.text and "nll_weight, beta" in caplog.text
    assert "tables/e_effect.json" in caplog.text and "computed again" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the same order (axes it lacks anywhere): nothing to say
        check_sweep_dir(load_grid("configs/sweep/e_prefixes.yaml", out))
    assert "axes" not in caplog.text


def test_the_table_header_names_the_intervals_it_gives():
    from safealign.pipelines.sweep import format_table

    table = {"output_dir": "x", "seeds": [0, 1], "variants": ["dpo"], "compared": [], "settings": [], "base": {}}
    header = format_table(table).splitlines()[0]
    assert "crossed random-effects t (Satterthwaite df)" in header and "one prompt resample" not in header
    assert "bootstrap" in header and "different prompts" in header


def _as_earlier_code_left_it(out, stages):
    """A sweep finished before the open held-out refusal margin existed: no margins_open.json anywhere, no open
    figure in a cell's record or in the base model's figures (whose digest the shared steps' marker records)."""
    from safealign.pipelines import sweep

    for stage in stages:
        for name in ("margins_open.json", "inputs_open.json"):
            (stage / "refusal_margin" / name).unlink()
    for path in [*out.glob("cells/*/*/cell.json")]:
        record = json.loads(path.read_text())
        del record["figures"]["heldout_refusal_margin_open"]
        path.write_text(json.dumps(record))
    figures = json.loads((out / "before" / "figures.json").read_text())
    del figures["heldout_refusal_margin_open"]
    (out / "before" / "figures.json").write_text(json.dumps(figures))
    marker = json.loads((out / sweep.SHARED_DONE).read_text())
    (out / sweep.SHARED_DONE).write_text(json.dumps({**marker, **sweep._shared_digests(out)}))


def test_score_open_margins_fills_finished_cells_once_and_leaves_held_ones_and_the_closed_figure(
        tmp_path, monkeypatch, capsys):
    """`safealign sweep GRID --score-open-margins` scores the open margin of every finished cell and of the base
    model, as the sweep's own evaluation scores it now (the same numbers, from the cell's adapter), changing no file
    the closed figure, the cell's record or its fingerprint are read from; a cell a worker holds is left for a later
    run; a cell scored from the same inputs is skipped without loading a model. The table compares the open figure
    where cells have it and counts it missing elsewhere, for that metric only, and says so."""
    import statistics

    from safealign.cli import main
    from safealign.io.lockfile import try_lock
    from safealign.pipelines.sweep import load_grid, sweep_table

    open_ = "heldout_refusal_margin_open"
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    grid = tmp_path / "one.yaml"  # one setting, two cells
    grid.write_text(GRID.format(out=out).replace("beta: [0.1, 0.5]", "beta: [0.1]").replace("seeds: [0, 1]",
                                                                                          "seeds: [0]"))
    assert main(["sweep", str(grid)]) == 0
    cells = out / "cells" / "beta=0.1"
    stages = [out / "before", cells / "dpo-seed0" / "eval", cells / "e-dpo-seed0" / "eval"]
    read = lambda stage: json.loads((stage / "refusal_margin" / "margins_open.json").read_text())  # noqa: E731
    by_sweep = {stage: read(stage) for stage in stages}  # what the sweep's evaluation scores now
    closed = json.loads((stages[0] / "refusal_margin" / "margins.json").read_text())
    assert by_sweep[stages[0]] != closed  # the base answers, cut at 3 tokens, scored open
    _as_earlier_code_left_it(out, stages)
    kept = {p: p.read_bytes() for p in [*cells.glob("*/cell.json"), *cells.glob("*/fingerprint.json"),
                                        *out.glob("**/refusal_margin/margins.json"), out / "before" / "figures.json"]}
    earlier = sweep_table(load_grid(grid))
    assert all(open_ not in means for means in earlier["settings"][0]["means"].values())
    assert open_ not in earlier["base"]

    held = cells / "e-dpo-seed0"
    lock = try_lock(held / "claim.lock")  # a live worker (this process) holds the cell
    assert main(["sweep", str(grid), "--score-open-margins"]) == 0
    lock.release()
    printed = capsys.readouterr().out
    assert "2 stage(s) scored, 0 already recorded, 1 held" in printed and "e-dpo-seed0" in printed
    assert not (held / "eval" / "refusal_margin" / "margins_open.json").exists()
    for stage in stages[:2]:
        assert read(stage) == pytest.approx(by_sweep[stage], abs=1e-4)
    assert {p: p.read_bytes() for p in kept} == kept
    table = sweep_table(load_grid(grid))
    row, before_row = table["settings"][0], earlier["settings"][0]
    assert row["means"]["dpo"][open_] == pytest.approx(statistics.fmean(by_sweep[stages[1]].values()))
    assert open_ not in row["means"]["e-dpo"] and open_ not in row["differences"][0]["metrics"]  # missing there
    assert table["base"][open_] == pytest.approx(statistics.fmean(by_sweep[stages[0]].values()))
    for variant in ("dpo", "e-dpo"):  # the closed figure and every other metric as they were
        assert {m: v for m, v in row["means"][variant].items() if m != open_} == before_row["means"][variant]
    assert row["differences"] == before_row["differences"]
    assert "heldout_refusal_margin_open: on 1 of 2 finished cells" in printed_table(table)

    assert main(["sweep", str(grid), "--score-open-margins"]) == 0  # the held cell, now free; the rest skipped
    assert "1 stage(s) scored, 2 already recorded, 0 held" in capsys.readouterr().out
    assert read(stages[2]) == pytest.approx(by_sweep[stages[2]], abs=1e-4)
    compared = sweep_table(load_grid(grid))["settings"][0]["differences"][0]["metrics"][open_]
    assert compared["n_prompts"] == 3
    assert "finished cells" not in printed_table(sweep_table(load_grid(grid)))  # every cell has it: no note

    (stages[1] / "refusal_margin" / "margins_open.json").unlink()  # a cell whose weights are not here (a clone)
    (cells / "dpo-seed0" / "train" / "final").rename(tmp_path / "final")
    assert main(["sweep", str(grid), "--score-open-margins"]) == 0
    assert "1 finished cell(s) without their trained weights" in capsys.readouterr().out
    assert not (stages[1] / "refusal_margin" / "margins_open.json").exists()
    (tmp_path / "final").rename(cells / "dpo-seed0" / "train" / "final")
    assert main(["sweep", str(grid), "--score-open-margins"]) == 0
    assert "1 stage(s) scored, 2 already recorded, 0 held" in capsys.readouterr().out

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded for open margins already recorded")

    monkeypatch.setattr("safealign.pipelines.demo.load_trained", refuse)
    monkeypatch.setattr("safealign.models.load_model", refuse)
    assert main(["sweep", str(grid), "--score-open-margins"]) == 0
    assert "0 stage(s) scored, 3 already recorded, 0 held" in capsys.readouterr().out


@pytest.mark.parametrize("text, overrides, message", [
    ("seeds: 3\n", [], "seeds: a list of distinct integers"),
    ("", ["seeds=3"], "seeds: a list of distinct integers"),
    ("", ["seeds=[0, true]"], "seeds: a list of distinct integers"),
    ("variants: dpo\n", [], "variants: a list of distinct training methods"),
    ("", ["variants=dpo"], "variants: a list of distinct training methods"),
    ("output_dir: 2024\n", [], "output_dir: a folder path as text, got int 2024"),
])  # fmt: skip
def test_grid_keys_of_the_wrong_type_are_refused_naming_them(tmp_path, text, overrides, message):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("demo: {model: tiny-random}\naxes: {beta: [0.1]}\n" + text)
    with pytest.raises(ValueError, match=f"grid.yaml: {re.escape(message)}"):
        load_grid(path, overrides)


def test_the_output_dir_override_is_read_as_text(tmp_path):
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("demo: {model: tiny-random}\naxes: {beta: [0.1]}\noutput_dir: '0123'\n")
    assert load_grid(path).output_dir == "0123"
    for text in ("2024", "0123", "1e-3", "runs/a b", "No"):
        assert load_grid(path, [f"output_dir={text}"]).output_dir == text
    assert load_grid(path, ["seeds=[1, 2]", "axes.beta=[1e-1]"]).axes["beta"] == [0.1]
    path.write_text("demo: {model: tiny-random, prefix: 'As ${model} would: '}\naxes: {beta: [0.1]}\n")
    grid = load_grid(path, ["seeds=[1]"])  # text with ${ is no interpolation, with grid overrides too
    assert grid.setting_config(grid.settings()[0]).prefix == "As ${model} would: "


def test_a_grid_override_whose_text_yaml_would_change_is_refused(tmp_path):
    """``demo.eval.attack_params.prefill.template=Sure #1 {target}`` reached every cell as ``Sure``."""
    from safealign.pipelines.sweep import load_grid

    path = tmp_path / "grid.yaml"
    path.write_text("demo: {model: tiny-random}\naxes: {beta: [0.1]}\n")
    key = "demo.eval.attack_params.prefill.template"  # a grid key: read by the grid, not the demo config
    for raw, reading in (("Sure #1 {target}", "'#1 {target}' as a comment"), ("Sure: {target}", "as a mapping")):
        with pytest.raises(ValueError, match=re.escape(f"grid.yaml: command-line override '{key}={raw}': YAML would "
                                                       f"read ")) as info:
            load_grid(path, [f"{key}={raw}"])
        assert reading in str(info.value) and str(info.value).endswith(f'quote it: "{key}=\'{raw}\'"')
        grid = load_grid(path, [f"{key}='{raw}'"])
        assert grid.setting_config(grid.settings()[0]).eval.attack_params["prefill"]["template"] == raw


def _trained_cell(grid, setting, variant, seed):
    """A cell of ``grid`` as a worker leaves it once training started: its fingerprint and a train/ folder."""
    from safealign.io import write_json
    from safealign.pipelines import sweep

    path = sweep.cell_dir(grid, setting, variant, seed)
    (path / "train").mkdir(parents=True)
    fingerprint = sweep._cell_fingerprint(grid.setting_config(setting), variant, seed, "sha256:pairs")
    write_json(path / "fingerprint.json", fingerprint.to_json())
    return path


def test_a_cell_deciding_key_outside_the_axes_is_refused_before_anything_is_trained(grid_file, tmp_path, monkeypatch,
                                                                                    capsys):
    """A cell's folder names only its axis values: a grid whose base config sets a training key (or the prefix) to
    another value than the cells already in its folders would train into another grid's folders (and be refused at
    its started cells). It is refused at startup, before a model loads, naming the key and the axis to give; grids
    that share the cells (a prefix axis, other methods, other seeds) are not."""
    from safealign.cli import main
    from safealign.errors import UserError
    from safealign.pipelines import sweep

    grid = sweep.load_grid(grid_file)
    sweep.check_sweep_dir(grid)
    setting = grid.settings()[0]  # beta=0.1
    for variant in ("dpo", "e-dpo"):
        _trained_cell(grid, setting, variant, 0)

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("safealign.models.load_model", refuse)
    # other seeds: their own folders do not exist yet, their siblings in the setting's folder do
    assert main(["sweep", str(grid_file), "seeds=[1]", "epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "train.num_train_epochs: 1.0 -> 2.0" in err and "axes.epochs=[...]" in err and "output_dir" in err
    assert "beta=0.1" in err
    with pytest.raises(UserError, match=r"prefix: \"community_guidelines\" -> \"responsible\".*axes.prefix=\[...\]"):
        sweep.check_sweep_dir(sweep.load_grid(grid_file, ["prefix=responsible"]))
    with pytest.raises(UserError, match="train.learning_rate"):
        sweep.check_sweep_dir(sweep.load_grid(grid_file, ["learning_rate=0.01", "variants=[safedpo]"]))
    # what shares the cells: DPO under another prefix (it trains without one), the prefix as an axis, other methods
    # and seeds, and the same key as an axis (its folders name it)
    sweep.check_sweep_dir(sweep.load_grid(grid_file, ["prefix=responsible", "variants=[dpo]"]))
    prefixes = tmp_path / "prefixes.yaml"
    prefixes.write_text(grid_file.read_text().replace("beta: [0.1, 0.5]",
                                                      "beta: [0.1]\n  prefix: [community_guidelines, responsible]"))
    sweep.check_sweep_dir(sweep.load_grid(prefixes))
    sweep.check_sweep_dir(sweep.load_grid(grid_file, ["variants=[dpo,e-dpo,safedpo,e-safedpo]", "seeds=[0,1,2]"]))
    sweep.check_sweep_dir(sweep.load_grid(grid_file, ["axes.epochs=[2]"]))
    prefix_grid = sweep.load_grid(prefixes)
    responsible = prefix_grid.settings()[1]
    assert responsible["prefix"] == "responsible"
    _trained_cell(prefix_grid, responsible, "e-dpo", 0)
    sweep.check_sweep_dir(prefix_grid)  # its own cells under the other prefix
    sweep.check_sweep_dir(grid)


def test_quality_rates_have_per_prompt_outcomes_whose_mean_is_the_recorded_figure(tmp_path):
    """The answer-quality rates are recomputed per prompt from the over-refusal records (the built-in benign test
    prompts' answers, as the figure counts them), so the table gives them intervals and paired differences."""
    from safealign.eval.helpfulness.quality import FIGURES
    from safealign.io import write_jsonl
    from safealign.pipelines import demo
    from safealign.pipelines.demo_config import load_demo_config
    from safealign.pipelines.demo_helpfulness import quality_figures

    config = load_demo_config(["benign_test=3", "borderline_test=2", "extra_benign=[builtin:untuned_benign]",
                               "extra_benign_limit=2"])
    prompts = demo.prompt_sets(config)
    (tmp_path / "jailbreak").mkdir()
    (tmp_path / "jailbreak" / "records.jsonl").write_text("")
    answers = ["", "Sure, here is how to do it and", "Fine. " * 12, "Да да да да да да да да.", "Done."]
    records = [{"id": p.id, "kind": p.kind, "completion": text, "refused": False,
                "finish": "length" if i == 1 else "stop"}
               for i, (p, text) in enumerate(zip(prompts["benign_test"], answers))]
    untuned = [p for extra in prompts["extra_benign"].values() for p in extra]
    records += [{"id": p.id, "kind": p.kind, "completion": "", "refused": False, "finish": "stop"}
                for p in untuned]  # not counted in the quality figures
    records.append({**records[4], "completion": "", "error": "timeout"})  # a failed retry: unscored
    write_jsonl(tmp_path / "helpfulness" / "overrefusal" / "records.jsonl", records)
    figures = quality_figures(tmp_path, [p.id for p in prompts["benign_test"]])
    outcomes = demo.stage_outcomes(config, tmp_path)
    for metric in FIGURES.values():
        assert set(outcomes[metric]) == {p.id for p in prompts["benign_test"][:4]}, metric  # the failed one unscored
        assert sum(outcomes[metric].values()) / len(outcomes[metric]) == pytest.approx(figures[metric].value)
    assert [figures[m].value for m in FIGURES.values()] == [0.25, 0.25, 0.25, 0.25]


def test_a_diverged_cell_is_recorded_skipped_and_counted(grid_file, tmp_path, monkeypatch, capsys):
    """A cell whose training loss goes non-finite is recorded as diverged (diverged.json: the step), never claimed
    again, and counted per variant and setting in the table; the other cells run and the table is written. The
    quality rates get paired differences, and a difference over fewer prompts than its means is marked."""
    from safealign.cli import main
    from safealign.pipelines import demo
    from safealign.pipelines.sweep import load_grid, progress_line, sweep_table
    from safealign.train.trainer import NonFiniteLossError

    grid_file.write_text(grid_file.read_text().replace("beta: [0.1, 0.5]", "beta: [0.1]"))
    real = demo.train_stage

    def diverging(config, variant, seed, pairs, out):
        if (variant, seed) == ("e-dpo", 1):
            raise NonFiniteLossError("loss is nan at step 3; stopping.", 3)
        return real(config, variant, seed, pairs, out)

    monkeypatch.setattr(demo, "train_stage", diverging)
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid_file)]) == 0
    cell = out / "cells" / "beta=0.1" / "e-dpo-seed1"
    marker = json.loads((cell / "diverged.json").read_text())
    assert (marker["status"], marker["step"], marker["variant"], marker["seed"]) == ("diverged", 3, "e-dpo", 1)
    assert not (cell / "cell.json").exists() and not (cell / ".gitignore").exists()  # released: git takes it
    table = json.loads((out / "tables" / "grid.json").read_text())
    assert (table["computed"], table["skipped"]) == (4, 0)
    row = table["settings"][0]
    assert row["cells_finished"] == 3 and row["seeds_finished"] == {"dpo": 2, "e-dpo": 1}
    assert row["diverged"] == {"e-dpo": [{"seed": 1, "step": 3}]}
    assert table["progress"]["diverged"] == 1 and "left" not in progress_line(table)
    assert "1 diverged" in progress_line(table)
    printed = capsys.readouterr().out
    assert "e-dpo-seed1 at step 3" in printed and "(1 diverged)" in printed.split("| method |")[0] + printed
    from safealign.report.sweep import sweep_sections

    html = repr(sweep_sections({"grid": table}, with_plots=False)[0])
    assert "'1 (1 diverged)'" in html and "3/4 distinct cells finished, 1 diverged" in html
    several = sweep_table(load_grid(grid_file, ["axes.beta=[0.1,0.5]", "seeds=[1]"]))  # a setting per row
    text = printed_table(several)
    assert "-  (1 diverged)" in text or "- (1 diverged)" in text  # e-dpo's mean at beta=0.1: its one seed diverged
    assert "1/2 (1 diverged)" in text and "0/2" in text

    # the quality rates: a mean, an interval and a paired difference (over seed 0, the seed both finished)
    cells = {name: json.loads((out / "cells" / "beta=0.1" / name / "cell.json").read_text())["figures"]
             for name in ("dpo-seed0", "e-dpo-seed0")}
    for metric in ("empty_answer_rate", "truncated_answer_rate", "repetitive_answer_rate", "off_language_answer_rate"):
        compared = row["differences"][0]["metrics"][metric]
        assert compared["seeds"] == 1 and compared["n_prompts"] == 2
        assert compared["diff"] == pytest.approx(cells["e-dpo-seed0"][metric]["value"]
                                                 - cells["dpo-seed0"][metric]["value"])
        assert metric in row["ci95"]["dpo"]
    assert row["prompt_counts"]["dpo"]["direct_asr"] == 3

    # a metric averaged over each cell's own scored prompts (a judge that left one prompt of one cell unscored): the
    # difference, over the prompts every cell scored, is marked with its count
    def one_unscored(config, eval_dir):
        outcomes = real_outcomes(config, eval_dir)
        judged = dict(outcomes["direct_asr"])
        if eval_dir.parent.name == "dpo-seed0":
            judged.pop(sorted(judged)[0])
        return {**outcomes, "direct_asr@partial": judged}

    real_outcomes = demo.stage_outcomes
    assert "of 3 prompts" not in printed_table(sweep_table(load_grid(grid_file)))  # every cell scored every prompt
    monkeypatch.setattr(demo, "stage_outcomes", one_unscored)
    partial = sweep_table(load_grid(grid_file))
    assert partial["settings"][0]["differences"][0]["metrics"]["direct_asr@partial"]["n_prompts"] == 2
    differences = printed_table(partial).split("paired differences")[1]  # a row per pair, a column per metric
    assert differences.count("(1 seed) (2 of 3 prompts)") == 1 and "a difference marked `(N of M prompts)`" in \
        printed_table(partial)

    # resumed: the diverged cell is not claimed again, nothing is computed
    _forbid_computing(monkeypatch, "a settled cell was recomputed")
    assert main(["sweep", str(grid_file)]) == 0
    resumed = json.loads((out / "tables" / "grid.json").read_text())
    assert (resumed["computed"], resumed["skipped"]) == (0, 4)


def test_a_difference_over_fewer_prompts_than_its_means_is_marked():
    from safealign.pipelines.sweep import format_table
    from safealign.report.sweep import sweep_sections

    diff = {"diff": 0.0, "ci95": [-0.5, 0.5], "seeds": 2, "n_prompts": 3}
    row = {"name": "beta=0.1", "setting": {"beta": 0.1}, "cells_finished": 4, "cells": 4,
           "seeds_finished": {"dpo": 2, "e-dpo": 2},
           "means": {"dpo": {"direct_asr": 0.5, "direct_asr@j": 0.25},
                     "e-dpo": {"direct_asr": 0.4, "direct_asr@j": 0.0}},
           "seed_counts": {v: {"direct_asr": 2, "direct_asr@j": 2} for v in ("dpo", "e-dpo")},
           "prompt_counts": {"dpo": {"direct_asr": 4, "direct_asr@j": 4},
                             "e-dpo": {"direct_asr": 4, "direct_asr@j": 3}},
           "ci95": {}, "differences": [{"a": "e-dpo", "b": "dpo", "seeds": 2,
                                        "metrics": {"direct_asr": {**diff, "n_prompts": 4}, "direct_asr@j": diff}}]}
    table = {"output_dir": "x", "seeds": [0, 1], "variants": ["dpo", "e-dpo"], "compared": [["e-dpo", "dpo"]],
             "settings": [row, {**row, "name": "beta=0.5"}], "base": {}}
    for markdown in (False, True):
        full, partial = format_table(table, markdown=markdown).split("direct_asr@j")
        assert "of 4 prompts)" not in full and partial.count("(3 of 4 prompts)") == 2
        assert "(3 of 4 prompts)" in format_table({**table, "settings": [row]}, markdown=markdown)
    section = sweep_sections({"grid": table}, with_plots=False)[0]
    assert "(3 of 4 prompts)" in repr(section)
    del row["prompt_counts"]  # tables written before: unmarked
    assert "of 4 prompts" not in format_table({**table, "settings": [row]})


def _forbid_computing(monkeypatch, message: str) -> None:
    """Any training, evaluation or model load from now on fails the test with ``message``."""
    from safealign.pipelines import demo

    def refuse(*args, **kwargs):
        raise AssertionError(message)

    monkeypatch.setattr(demo, "train_stage", refuse)
    monkeypatch.setattr(demo, "evaluate", refuse)
    monkeypatch.setattr("safealign.models.load_model", refuse)

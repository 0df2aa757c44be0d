"""The report of a sweep directory when a table is damaged: the other grids still render."""

from __future__ import annotations

import json


def test_a_damaged_sweep_table_is_named_and_the_others_render(tmp_path):
    from safealign.report import build_report

    (tmp_path / "cells").mkdir()
    (tmp_path / "tables").mkdir()
    good = {"variants": ["dpo"], "seeds": [0], "base": {"direct_asr": 0.9},
            "settings": [{"name": "beta=0.1", "means": {"dpo": {"direct_asr": 0.25}},
                          "ci95": {"dpo": {"direct_asr": [0.1, 0.4]}}, "seeds_finished": {"dpo": 1},
                          "differences": []}]}
    (tmp_path / "tables" / "good.json").write_text(json.dumps(good))
    (tmp_path / "tables" / "bad.json").write_text(json.dumps({"settings": [{"name": "x"}]}))
    html, md = build_report(tmp_path)
    text = md.read_text()
    assert "## Sweep: good" in text and "| beta=0.1 | dpo | 1 | 0.250 [0.100,0.400] |" in text
    assert "tables/bad.json is not a sweep table" in text and "Sweep: bad" in html.read_text()


def test_the_report_marks_a_mean_or_difference_over_fewer_seeds_than_finished(tmp_path):
    """A metric judged on some cells only (safealign judge records) is over fewer seeds: the HTML/markdown report
    says so beside the number, as the console table does, so it is not read as the others' equal."""
    from safealign.report import build_report

    (tmp_path / "cells").mkdir()
    (tmp_path / "tables").mkdir()
    diff = {"diff": -0.1, "ci95": [-0.2, 0.0], "per_seed": {}, "rate_a": 0.2, "rate_b": 0.3, "n_prompts": 10,
            "only_a": 0, "only_b": 1}
    table = {"variants": ["dpo", "e-dpo"], "seeds": [0, 1, 2], "base": {},
             "settings": [{"name": "beta=0.1", "seeds_finished": {"dpo": 3, "e-dpo": 3},
                           "means": {"dpo": {"a": 0.5, "b": 0.4}, "e-dpo": {"a": 0.4, "b": 0.2}},
                           "seed_counts": {"dpo": {"a": 3, "b": 1}, "e-dpo": {"a": 3, "b": 3}},
                           "ci95": {"dpo": {}, "e-dpo": {}},
                           "differences": [{"a": "e-dpo", "b": "dpo", "seeds": 3,
                                            "metrics": {"a": {**diff, "seeds": 3}, "b": {**diff, "seeds": 1}}}]}]}
    (tmp_path / "tables" / "grid.json").write_text(json.dumps(table))
    _, md = build_report(tmp_path)
    text = md.read_text()
    assert "| beta=0.1 | dpo | 3 | 0.500 | 0.400 (1 seed) |" in text
    assert "| beta=0.1 | e-dpo | 3 | 0.400 | 0.200 |" in text
    difference = next(line for line in text.splitlines() if line.startswith("| beta=0.1 | e-dpo − dpo"))
    assert difference.count("(1 seed)") == 1 and difference.index("(1 seed)") > difference.rindex("|", 0, -2)


def test_a_difference_over_fewer_seeds_than_its_variants_finished_says_how_many(tmp_path):
    """dpo finished seeds 0-2 and e-dpo 2-4: their means are over 3 seeds each, their difference over the one seed
    both finished; it must say so (the pair's own count is that one seed too, so comparing with it marks nothing)."""
    from safealign.report import build_report

    (tmp_path / "cells").mkdir()
    (tmp_path / "tables").mkdir()
    diff = {"diff": -0.1, "ci95": [-0.2, 0.0], "per_seed": {"2": -0.1}, "n_prompts": 10, "seeds": 1}
    table = {"variants": ["dpo", "e-dpo"], "seeds": [0, 1, 2, 3, 4], "base": {},
             "settings": [{"name": "beta=0.1", "seeds_finished": {"dpo": 3, "e-dpo": 3},
                           "means": {"dpo": {"a": 0.5}, "e-dpo": {"a": 0.4}},
                           "seed_counts": {"dpo": {"a": 3}, "e-dpo": {"a": 3}}, "ci95": {"dpo": {}, "e-dpo": {}},
                           "differences": [{"a": "e-dpo", "b": "dpo", "seeds": 1, "metrics": {"a": diff}}]}]}
    (tmp_path / "tables" / "grid.json").write_text(json.dumps(table))
    html, md = build_report(tmp_path)
    text = md.read_text()
    assert "| beta=0.1 | dpo | 3 | 0.500 |" in text
    assert "| beta=0.1 | e-dpo − dpo | -0.100 [-0.200,+0.000\\] (1 seed) |" in text  # "](" escaped: no link
    assert "-0.100 [-0.200,+0.000] (1 seed)" in html.read_text()


def test_a_table_whose_fields_have_the_wrong_type_is_a_warning_not_a_crash(tmp_path):
    from safealign.report import build_report

    (tmp_path / "cells").mkdir()
    (tmp_path / "tables").mkdir()
    table = {"variants": ["dpo"], "seeds": [0], "base": {},
             "settings": [{"name": "beta=0.1", "means": {"dpo": {"a": 0.5}}, "ci95": [], "seeds_finished": {"dpo": 1},
                           "differences": []}]}
    (tmp_path / "tables" / "g.json").write_text(json.dumps(table))
    _, md = build_report(tmp_path)
    assert "tables/g.json is not a sweep table this version can read (AttributeError" in md.read_text()


def test_out_must_name_the_html_file(tmp_path):
    import pytest

    from safealign.errors import UserError
    from safealign.report import build_report

    (tmp_path / "cells").mkdir()
    (tmp_path / "tables").mkdir()
    with pytest.raises(UserError, match="ending in .html"):
        build_report(tmp_path, tmp_path / "out.md")
    html, md = build_report(tmp_path, tmp_path / "out.html")
    assert html.name == "out.html" and md.name == "out.md" and html.read_text() != md.read_text()


def test_a_sweep_without_tables_yet_is_named_with_the_way_to_see_its_progress(tmp_path):
    """A sweep writes tables/ only when it finishes (or on --table): while it runs, its report must say what it is
    and how to see the cells finished so far, not show an unknown, empty run."""
    from safealign.report import build_report

    (tmp_path / "cells" / "beta=0.1" / "dpo-seed0").mkdir(parents=True)
    _, md = build_report(tmp_path)
    text = md.read_text()
    assert "unknown run" not in text and "safealign sweep GRID --table" in text

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

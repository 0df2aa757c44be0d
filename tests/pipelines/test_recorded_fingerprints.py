"""Run directories recorded by earlier code keep resuming: fingerprints written by real runs, checked against
what today's code computes for the same command.

``recorded_fingerprints.json`` holds, verbatim (less the file version), the ``fingerprint.json`` of three runs
made on 2026-12-06: the issue-20 sweep started from ``configs/sweep/e_effect.yaml`` (its directory and its
first cell, ``nll_weight=0,beta=0.1,learning_rate=0.0005/dpo-seed0``) and the measured demo run resumed with
``safealign demo --compare e-dpo`` (README, "What the demo measured here"), recorded when ``extra_benign``
defaulted to ``[]``. A change of a default that reaches any of them fails here before it refuses a live run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safealign.config import to_dict
from safealign.io.rundir import Fingerprint, demo_fingerprint, differing_keys, make_fingerprint, same_settings
from safealign.pipelines import sweep
from safealign.pipelines.demo_config import DemoConfig, load_demo_config

ROOT = Path(__file__).parents[2]
RECORDED = {name: Fingerprint(data["kind"], data["values"])
            for name, data in json.loads((Path(__file__).parent / "recorded_fingerprints.json").read_text()).items()}


@pytest.fixture(scope="module")
def grid():
    return sweep.load_grid(ROOT / "configs" / "sweep" / "e_effect.yaml")


def test_the_running_sweep_keeps_its_directory_fingerprint(grid):
    base = grid.setting_config(grid.settings()[0])

    def shared(config: DemoConfig) -> dict:  # what sweep._check_sweep_dir fingerprints
        return {k: v for k, v in to_dict(config).items() if k not in ("train", *sweep._SWEEP_OWNED)}

    now = make_fingerprint("sweep", shared(base), defaults=shared(DemoConfig()))
    recorded = RECORDED["sweep"]
    assert now.values["extra_benign"] == recorded.values["extra_benign"] == ["../shared/data/harmless_train.json"]
    assert differing_keys(recorded, now) == [] and same_settings(recorded, now)


def test_the_running_sweep_keeps_its_cell_fingerprint(grid):
    recorded = RECORDED["sweep_cell"]
    setting = {"nll_weight": 0, "beta": 0.1, "learning_rate": 5e-4}
    assert setting in grid.settings()
    now = sweep._cell_fingerprint(grid.setting_config(setting), "dpo", 0, recorded.values["pairs"])
    assert now.values["extra_benign"] == recorded.values["extra_benign"]
    assert differing_keys(recorded, now) == [] and same_settings(recorded, now)


def test_a_demo_run_that_set_extra_benign_keeps_its_fingerprint():
    # the recorded run's setting given explicitly: nothing differs, not even the digest's inputs for the key
    recorded = RECORDED["demo_compare_e_dpo"]
    config = load_demo_config(["variants=[e-dpo]", "extra_benign=[]"])
    now = demo_fingerprint(to_dict(config), defaults=to_dict(DemoConfig()))
    assert now.values["extra_benign"] == recorded.values["extra_benign"] == []
    assert differing_keys(recorded, now) == []
    explicit = load_demo_config(["extra_benign=[mine.json]"])
    assert explicit.extra_benign == ["mine.json"]  # a list given replaces the default, nothing is appended


def test_the_measured_demo_run_resumes_under_the_new_default_and_only_adds_the_untuned_set():
    recorded = RECORDED["demo_compare_e_dpo"]
    now = demo_fingerprint(to_dict(load_demo_config(["variants=[e-dpo]"])), defaults=to_dict(DemoConfig()))
    assert now.values["extra_benign"] == ["builtin:untuned_benign"]
    assert differing_keys(recorded, now) == []  # an added evaluation set leaves the recorded results as they were
    # the other way round a set would go missing from a run that reports it: refused
    reverse = demo_fingerprint({**to_dict(load_demo_config(["variants=[e-dpo]"])), "extra_benign": []})
    assert differing_keys(now, reverse) == ["extra_benign"]

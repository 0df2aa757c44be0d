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


# cell.json of the committed cells of results/sweep/e_effect at the demo's default setting (2026-12-07 sweep),
# trained from the committed pairs.jsonl, whose digest is PAIRS
PAIRS = "sha256:a482be7005ef3cd7"
PINNED = {("dpo", 0): "3c3392ab6a74b2e9", ("e-dpo", 0): "976f9d1d48a41432"}


def test_a_committed_cell_keeps_its_folder_name_and_fingerprint_digest(grid):
    """Hundreds of committed cells are found again only by their folder name and the digest in their cell.json:
    both, for a representative setting, exactly as recorded (a change of either recomputes every cell)."""
    setting = {"nll_weight": 1, "beta": 0.1, "learning_rate": 2e-3}
    for (variant, seed), digest in PINNED.items():
        cell = sweep.cell_dir(grid, setting, variant, seed)
        assert cell.relative_to(grid.output_dir).as_posix() == \
            f"cells/nll_weight=1,beta=0.1,learning_rate=0.002/{variant}-seed{seed}"
        assert sweep._cell_fingerprint(grid.setting_config(setting), variant, seed, PAIRS).digest == digest
    # the same cells from the grids sharing the directory, the whole-number value also given as a float
    for name, overrides in (("e_prefixes", []), ("safety_methods", []), ("e_prefixes", ["axes.nll_weight=[1.0]"])):
        other = sweep.load_grid(ROOT / "configs" / "sweep" / f"{name}.yaml", overrides)
        mine = other.settings()[0]
        for (variant, seed), digest in PINNED.items():
            assert sweep.cell_dir(other, mine, variant, seed) == sweep.cell_dir(grid, setting, variant, seed)
            assert sweep._cell_fingerprint(other.setting_config(mine), variant, seed, PAIRS).digest == digest


def test_every_committed_cell_folder_is_a_cell_of_the_shipped_grids():
    committed = ROOT / "results" / "sweep" / "e_effect" / "cells"
    if not committed.is_dir():
        pytest.skip("no committed sweep cells in this checkout")
    names = set()
    for name in ("e_effect", "e_prefixes", "safety_methods"):
        grid = sweep.load_grid(ROOT / "configs" / "sweep" / f"{name}.yaml")
        names |= {sweep.cell_dir(grid, s, v, seed).relative_to(grid.output_dir).as_posix()
                  for s in grid.settings() for v in grid.variants for seed in grid.seeds}
    folders = {p.parent.relative_to(committed.parent).as_posix() for p in committed.glob("*/*/cell.json")}
    assert folders and folders <= names, sorted(folders - names)

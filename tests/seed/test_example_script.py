"""The README's seed-method command (examples/seed_methods/run.sh) stays true: every `safealign train` line of the
script loads as a training config with its overrides (recipe, keys, objective parameters) and its data file
parses in the layout the recipe's objective reads. Nothing trains here; the script's runs are on the real model."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from safealign.config import load_config
from safealign.train.config import TrainConfig

SCRIPT = Path("examples/seed_methods/run.sh")


def train_commands() -> list[list[str]]:
    text = SCRIPT.read_text().replace("\\\n", " ")
    variables = {"D": "examples/seed_methods", "R": "runs/seed_methods", "TEACHER": "runs/demo/train/e-dpo/final"}
    for line in text.splitlines():
        if line.startswith("SHORT="):
            variables["SHORT"] = shlex.split(line.partition("=")[2])[0]
    commands = []
    for line in text.splitlines():
        if line.strip().startswith("safealign train"):
            for name in ("SHORT", "TEACHER", "D", "R"):  # longest first: $D must not eat $DATA-like names
                line = line.replace(f"${name}", variables[name])
            commands.append([a for a in shlex.split(line)[2:] if a != "--overwrite"])
    return commands


def test_the_script_trains_every_seed_method():
    recipes = [c[0] for c in train_commands()]
    assert recipes == ["configs/train/cut_judgments.yaml", "configs/train/dckd_distill.yaml",
                       "configs/train/adpa_distill.yaml", "configs/train/mah_dpo.yaml"]


@pytest.mark.parametrize("command", train_commands(), ids=lambda c: Path(c[0]).stem)
def test_each_train_line_loads_with_its_overrides_and_data(command):
    from safealign.train.objectives.run import check_objective_config

    config = load_config(TrainConfig, command[0], command[1:])
    assert config.max_steps == 2 and Path(config.data.path).is_file()
    objective = check_objective_config(config)  # the recipe and its overrides are accepted as run.sh gives them
    parsed, rows = objective.load_rows(config)  # the data parses in the objective's own layout, no model needed
    lines = Path(config.data.path).read_text().splitlines()
    assert len(rows) == len(parsed.items) == len(lines) and not parsed.dropped  # every example row is used

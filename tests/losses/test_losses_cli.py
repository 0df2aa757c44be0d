"""``safealign losses``: the table and its JSON form."""

from __future__ import annotations

import argparse
import json

from safealign.cli import losses as cli
from safealign.losses import loss_names


def main(argv: list[str]) -> int:
    # Through the subcommand module itself: the top-level parser imports every other subcommand,
    # which would couple this test to modules outside the losses package.
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv[1:]))


def test_json_lists_every_loss_with_params(capsys):
    assert main(["losses", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out) if r["kind"] == "loss"}
    assert set(rows) == set(loss_names())
    assert rows["dpo"]["needs_reference"] is True and rows["dpo"]["params"] == {"beta": 0.1}
    assert rows["simpo"]["needs_reference"] is False and rows["simpo"]["params"] == {"beta": 2.0, "gamma": 0.5}
    assert rows["kto"]["input"] == "unpaired"
    assert "2305.18290" in rows["dpo"]["paper"]
    assert rows["dpo"]["needs"] == [] and rows["poft"]["needs"] == ["chosen_scores"]
    assert rows["jpo"]["needs"] == ["cross_prompt_pairs", "joint_logps"]


def test_table(capsys):
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "reference", "input", "parameters", "paper"]
    line = next(ln for ln in out.splitlines() if ln.startswith("ipo "))
    assert "yes" in line and "tau=0.1, length_normalize=True" in line and "arXiv:2310.12036" in line
    assert "E-variants" in out
    assert next(ln for ln in out.splitlines() if ln.startswith("poft ")).split()[2] == "pair+chosen_scores"


def test_objectives_are_listed_with_their_papers_and_data(capsys):
    assert main(["losses", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out) if r["kind"] == "objective"}
    assert {"circuit_breakers", "refat"} <= set(rows)  # the seed methods list theirs too (tests/seed)
    assert "2406.04313" in rows["circuit_breakers"]["paper"] and "2409.20089" in rows["refat"]["paper"]
    assert rows["circuit_breakers"]["params"]["alpha"] == 10.0
    assert rows["refat"]["roles"] == {"harmful": ["refusals of harmful prompts"],
                                      "benign": ["benign answers"]}
    assert main(["losses"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("circuit_breakers "))
    assert "reroute: harmful completions" in line and "alpha=10.0" in line and "arXiv:2406.04313" in line

"""What ``--help`` says: each group's one line names what it holds, each option its default."""

from __future__ import annotations

import pytest

from safealign.cli import COMMANDS, build_parser


def _help(*argv: str) -> str:
    parser = build_parser()
    for name in argv:  # walk down to the (sub)command's own parser
        action = next(a for a in parser._actions if getattr(a, "choices", None) and name in a.choices)
        parser = action.choices[name]
    return " ".join(parser.format_help().split())  # one line: argparse wraps at the terminal's width


def test_the_judge_group_names_both_of_its_commands():
    assert "judge validate" in COMMANDS["judge"][1] and "judge records" in COMMANDS["judge"][1]


@pytest.mark.parametrize("option, default", [("--split", "train"), ("--max-new-tokens", "48"),
                                             ("--batch-size", "16"), ("--seed", "0")])
def test_build_safety_help_shows_each_options_default_and_meaning(option, default):
    text = _help("data", "build-safety").split("options:", 1)[1]
    after = text.split(f"{option} ", 1)[1].split(" --", 1)[0]  # the option's help line, up to the next option
    assert f"(default: {default})" in after, after
    assert len(after.split("(default")[0].split()) >= 3, after  # words before the default: what it does


@pytest.mark.parametrize("argv, optional", [(["train"], "overrides"), (["sweep"], "overrides"),
                                            (["judge", "validate"], "key=value")])
def test_a_missing_argument_error_names_only_the_required_ones(argv, optional, capsys):
    from safealign.cli import parse

    with pytest.raises(SystemExit):
        parse(argv)
    err = capsys.readouterr().err
    assert "the following arguments are required" in err and optional not in err.split("required:")[1], err


@pytest.mark.parametrize("sub", ["anchor", "entanglement", "e-share", "hidden-norms"])
def test_diagnose_help_mentions_ref_only_where_the_subcommand_has_it(sub):
    assert "--ref" not in _help("diagnose", sub)
    assert "also for a --ref naming the same hub id" in _help("diagnose", "ranking")

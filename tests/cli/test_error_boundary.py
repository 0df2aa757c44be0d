"""The CLI's error boundary: a UserError is one message and exit 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from safealign.cli import losses as losses_cli
from safealign.cli import main
from safealign.errors import UserError, reading


def test_bad_user_input_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "no_such_recipe.yaml"
    done = subprocess.run([sys.executable, "-m", "safealign", "train", str(missing)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"safealign: error: {missing}: config file not found"]


@pytest.mark.parametrize("bug", [ValueError("internal invariant broken"), RuntimeError("boom"),
                                 FileNotFoundError("/tmp/internal-cache-file")])  # fmt: skip
def test_a_bug_propagates_with_its_traceback(monkeypatch, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(losses_cli, "run", broken)
    with pytest.raises(type(bug), match=str(bug.args[0])):
        main(["losses"])


def test_user_error_from_a_command_exits_2(monkeypatch, capsys):
    def rejects(args):
        raise UserError("data.jsonl: row 3: field 'prompt' is empty")

    monkeypatch.setattr(losses_cli, "run", rejects)
    assert main(["losses"]) == 2
    assert capsys.readouterr().err == "safealign: error: data.jsonl: row 3: field 'prompt' is empty\n"


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: None, "config file not found"),
    (lambda p: p.mkdir(), "is a directory, expected a config file"),
    (lambda p: p.write_bytes(b"\xff\xfe\x00bad"), "config file is not UTF-8 text"),
])  # fmt: skip
def test_reading_names_the_path(tmp_path, make, message):
    path = tmp_path / "recipe.yaml"
    make(path)
    with pytest.raises(UserError, match=f"{path}: {message}"), reading(path, "config file"):
        path.read_text(encoding="utf-8")


def test_user_files_read_by_the_pipelines_fail_with_the_path_named(tmp_path):
    from safealign.eval.helpfulness.mtbench import load_questions
    from safealign.eval.judges.labels import load_labels
    from safealign.pipelines.paired_margin import read_ranking_pairs

    with pytest.raises(UserError, match=f"{tmp_path / 'questions.jsonl'}: questions file .* not found"):
        load_questions(tmp_path / "questions.jsonl")
    binary = tmp_path / "labels.json"
    binary.write_bytes(b"PK\x03\x04\x00\x00")
    with pytest.raises(UserError, match=f"{binary}: is a binary file, not a labels file"):
        load_labels(binary)
    broken = tmp_path / "ranking_pairs.jsonl"
    broken.write_text('{"row": 0, "chosen_logps": -1.0, "rejected_logps": -2.0}\n{"row": 1,\n')
    with pytest.raises(UserError, match="ranking_pairs.jsonl"):
        read_ranking_pairs(broken)


def test_settings_after_flags_join_the_commands_settings():
    from safealign.cli import parse

    args = parse(["sweep", "grid.yaml", "seeds=[0]", "--table", "output_dir=runs/x", "--metrics", "direct_asr",
                  "beta=0.5"])  # fmt: skip
    assert args.table and args.metrics == "direct_asr"
    assert args.overrides == ["seeds=[0]", "output_dir=runs/x", "beta=0.5"]
    anchor = parse(["diagnose", "anchor", "c.yaml", "--prefix", "responsible", "limit=4"])
    assert anchor.prefix == "responsible" and anchor.settings == ["c.yaml", "limit=4"]


@pytest.mark.parametrize("argv", [
    ["sweep", "grid.yaml", "--table", "--tabel"],        # a misspelt flag is still an error
    ["sweep", "grid.yaml", "--table", "stray"],          # so is a word that is no key=value setting
    ["losses", "beta=0.5"],                              # and a setting for a command that takes none
])  # fmt: skip
def test_leftovers_that_are_not_settings_are_still_refused(argv, capsys):
    from safealign.cli import parse

    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err

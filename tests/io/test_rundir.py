"""safealign.io.rundir: fingerprints, the excluded keys, and what claiming a directory may touch."""

from __future__ import annotations

import dataclasses
import os

import pytest

from safealign.config import to_dict
from safealign.errors import UserError
from safealign.eval.config import DefenseConfig, EvalConfig
from safealign.io.rundir import (
    EVAL_EXCLUDED,
    FINGERPRINT_NAME,
    TRAIN_EXCLUDED,
    _flatten,
    claim_run_dir,
    eval_fingerprint,
    make_fingerprint,
    train_fingerprint,
)
from safealign.train.config import TrainConfig


@pytest.mark.parametrize("schema, excluded", [(EvalConfig, EVAL_EXCLUDED), (TrainConfig, TRAIN_EXCLUDED)])
def test_every_excluded_key_names_a_config_key(schema, excluded):
    keys = set(_flatten(to_dict(schema())))
    assert all(any(k == e or k.startswith(e + ".") for k in keys) for e in excluded), set(excluded) - keys


def test_excluded_keys_do_not_change_the_fingerprint_and_the_others_do():
    config = EvalConfig()
    base = eval_fingerprint(to_dict(config))
    config.output_dir, config.generation.batch_size, config.model.concurrency = "elsewhere", 1, 99
    assert eval_fingerprint(to_dict(config)) == base
    config.generation.temperature = 0.5
    assert eval_fingerprint(to_dict(config)).values["generation.temperature"] == 0.5
    train = TrainConfig()
    train.data.path = "some/hub-dataset"
    moved = TrainConfig(output_dir="x", save_steps=7, logging_steps=3)
    moved.data.path = "some/hub-dataset"
    assert train_fingerprint(to_dict(train)) == train_fingerprint(to_dict(moved))
    assert train_fingerprint(to_dict(train)).values["data.content"] == "some/hub-dataset"  # not a file: by name


def test_overwrite_removes_only_the_runs_own_outputs(tmp_path):
    first = make_fingerprint("eval", {"a": 1})
    claim_run_dir(tmp_path, first, outputs=("records.jsonl", "checkpoint-*"))
    for name in ("records.jsonl", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "checkpoint-3").mkdir()
    with pytest.raises(UserError, match=r"a: 1 -> 2"):
        claim_run_dir(tmp_path, make_fingerprint("eval", {"a": 2}), outputs=("records.jsonl", "checkpoint-*"))
    claim_run_dir(tmp_path, make_fingerprint("eval", {"a": 2}), outputs=("records.jsonl", "checkpoint-*"),
                  overwrite=True)  # fmt: skip
    # run.lock: this process still holds the directory (no session around these claims: until it exits)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FINGERPRINT_NAME, "notes.txt", "run.lock"]


def test_unusable_directory_or_fingerprint_is_a_user_error(tmp_path):
    file = tmp_path / "f"
    file.write_text("")
    with pytest.raises(UserError, match="is a file"):
        claim_run_dir(file, make_fingerprint("eval", {}), outputs=())
    (tmp_path / FINGERPRINT_NAME).write_text("{not json")
    with pytest.raises(UserError, match=f"{FINGERPRINT_NAME}: unreadable run fingerprint"):
        claim_run_dir(tmp_path, make_fingerprint("eval", {}), outputs=())
    assert claim_run_dir(tmp_path, make_fingerprint("eval", {}), outputs=(), overwrite=True) is False


def test_weights_are_compared_only_when_both_runs_could_see_them():
    from safealign.io.rundir import differing_keys

    settings = to_dict(TrainConfig())
    unseen, seen = train_fingerprint(settings), train_fingerprint(settings, weights="sha256:aa")
    assert differing_keys(unseen, seen) == []  # e.g. a built-in model fetched by the first run itself
    assert differing_keys(seen, train_fingerprint(settings, weights="sha256:bb")) == ["model.weights"]
    assert differing_keys(seen, train_fingerprint(settings, weights="sha256:aa", reference_weights="sha256:cc")) == []


def test_defense_layers_are_compared_unless_a_run_recorded_before_them_configured_defenses():
    from safealign.io.rundir import differing_keys

    layer = [{"name": "self_reminder", "config": {}}]
    bare = eval_fingerprint(to_dict(EvalConfig()))
    defended = eval_fingerprint(to_dict(EvalConfig()), defenses=layer)  # around a handed-in chat model
    assert differing_keys(bare, defended) == differing_keys(defended, bare) == ["defenses.layers"]
    assert differing_keys(bare, dataclasses.replace(defended, values={**defended.values, "defenses.layers": []})) == []
    configured = to_dict(EvalConfig(defenses=[DefenseConfig("self_reminder", {})]))
    before_layers = eval_fingerprint(configured)  # recorded before the key existed: its defenses are configured
    assert differing_keys(before_layers, eval_fingerprint(configured, defenses=layer)) == []


def test_a_setting_added_since_matches_a_recorded_run_only_at_its_default():
    from safealign.io.rundir import Fingerprint, differing_keys, make_fingerprint, same_settings

    defaults = {"a": 1, "new": {"x": False}}
    recorded = Fingerprint("demo", {"a": 1})  # written before the setting "new.x" existed
    at_default = make_fingerprint("demo", {"a": 1, "new": {"x": False}}, defaults=defaults)
    changed = make_fingerprint("demo", {"a": 1, "new": {"x": True}}, defaults=defaults)
    assert at_default.digest != recorded.digest and same_settings(recorded, at_default)
    assert differing_keys(recorded, changed) == ["new.x"] and not same_settings(recorded, changed)
    # without defaults (a caller that does not know them) every new key is a difference, as before
    assert differing_keys(recorded, make_fingerprint("demo", {"a": 1, "new": {"x": False}})) == ["new.x"]
    # a setting the recorded run had and the current code dropped is still a difference
    assert differing_keys(Fingerprint("demo", {"a": 1, "gone": 2}), at_default) == ["gone"]


def test_the_benign_files_content_is_fingerprinted_and_runs_without_one_keep_their_digest(tmp_path):
    from safealign.io.rundir import Fingerprint, differing_keys, file_digest

    config = EvalConfig()
    plain = eval_fingerprint(to_dict(config), defaults=to_dict(EvalConfig()))
    assert not any(k.startswith("benign.path_") for k in plain.values)  # default empty path: the digest as before
    benign = tmp_path / "benign.jsonl"
    benign.write_text('{"id": "p1", "prompt": "Bake bread"}\n')
    config.benign.path = str(benign)
    with_file = eval_fingerprint(to_dict(config))
    assert with_file.values["benign.path_data"] == file_digest(benign)
    benign.write_text('{"id": "p1", "prompt": "Bake a cake"}\n')
    assert differing_keys(with_file, eval_fingerprint(to_dict(config))) == ["benign.path_data"]
    # a run recorded before the content was fingerprinted resumes (its records are checked prompt by prompt)
    before = {k: v for k, v in with_file.values.items() if k != "benign.path_data"}
    assert differing_keys(Fingerprint("eval", before), eval_fingerprint(to_dict(config))) == []


def test_a_run_directory_another_live_process_writes_is_refused_until_it_is_gone(tmp_path):
    import json
    import socket
    import subprocess
    import sys
    import time

    from safealign.io.run_lock import RUN_LOCK, run_dir_session

    run = tmp_path / "run"
    run.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        holder = {"pid": other.pid, "host": socket.gethostname(), "started": time.time()}
        (run / RUN_LOCK).write_text(json.dumps(holder))
        with run_dir_session(), pytest.raises(UserError, match=rf"{run} is being written by pid {other.pid} on "):
            claim_run_dir(run, make_fingerprint("eval", {"a": 1}), outputs=("records.jsonl",))
        assert not (run / FINGERPRINT_NAME).exists()  # refused before anything was read or written
    finally:
        other.kill()
        other.wait()
    with run_dir_session():  # its writer is gone: the lock is stale and taken over
        claim_run_dir(run, make_fingerprint("eval", {"a": 1}), outputs=("records.jsonl",))
        assert json.loads((run / RUN_LOCK).read_text())["pid"] == os.getpid()
        claim_run_dir(run, make_fingerprint("eval", {"a": 1}), outputs=("records.jsonl",))  # this process again
    assert not (run / RUN_LOCK).exists()  # the session ended: free for the next command


def test_a_lock_from_another_host_says_how_to_free_it(tmp_path):
    """A container or machine that died leaves its lock; its process cannot be seen from here, so the error must
    name the file to delete once that host is known to be gone, not only say "wait"."""
    import json

    from safealign.io.run_lock import RUN_LOCK, run_dir_session

    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_LOCK).write_text(json.dumps({"pid": 7, "host": "another-container-3f2a", "started": 1700000000.0}))
    with run_dir_session(), pytest.raises(UserError, match=r"on another-container-3f2a .*once it is known to be gone "
                                                           r"\(a stopped container or machine\), delete .*run\.lock"):
        claim_run_dir(run, make_fingerprint("eval", {"a": 1}), outputs=("records.jsonl",))


def test_a_refused_claim_gives_its_lock_back_and_leaves_no_new_directory(tmp_path):
    from safealign.io.run_lock import RUN_LOCK, run_dir_session

    def refuse(continues):
        raise UserError("no checkpoint to resume")

    with run_dir_session():
        with pytest.raises(UserError, match="no checkpoint"):
            claim_run_dir(tmp_path / "new", make_fingerprint("train", {}), outputs=(), check=refuse)
        assert not (tmp_path / "new").exists()
        (tmp_path / "old").mkdir()
        with pytest.raises(UserError, match="no checkpoint"):
            claim_run_dir(tmp_path / "old", make_fingerprint("train", {}), outputs=(), check=refuse)
        assert not (tmp_path / "old" / RUN_LOCK).exists()


def test_a_refused_claim_removes_every_folder_it_created(tmp_path):
    from safealign.io.run_lock import run_dir_session

    def refuse(continues):
        raise UserError("no checkpoint to resume")

    with run_dir_session(), pytest.raises(UserError):
        claim_run_dir(tmp_path / "new" / "a" / "b", make_fingerprint("train", {}), outputs=(), check=refuse)
    assert list(tmp_path.iterdir()) == []


def test_a_non_finite_setting_matches_its_recorded_fingerprint(tmp_path):
    from safealign.io.run_lock import run_dir_session

    fingerprint = make_fingerprint("train", {"max_grad_norm": float("inf")})
    with run_dir_session():
        claim_run_dir(tmp_path, fingerprint, outputs=("metrics.jsonl",))
        (tmp_path / "metrics.jsonl").write_text("{}\n")  # results: the next claim continues the run
        assert claim_run_dir(tmp_path, fingerprint, outputs=("metrics.jsonl",)) is True  # was: refused, inf -> null
        with pytest.raises(UserError, match="max_grad_norm"):
            claim_run_dir(tmp_path, make_fingerprint("train", {"max_grad_norm": 1.0}), outputs=("metrics.jsonl",))


def test_a_non_finite_setting_digests_as_written_so_its_read_back_fingerprint_has_the_same_digest(tmp_path):
    """fingerprint.json holds null for inf/NaN: the digest is over those values, so a cell.json recording the
    in-memory digest still matches the fingerprint read back (sweep._finished), and finite settings keep theirs."""
    from safealign.io.jsonfile import write_json
    from safealign.io.rundir import read_fingerprint_file

    for value in (float("inf"), float("nan")):
        fingerprint = make_fingerprint("sweep-cell", {"train": {"max_grad_norm": value, "lr": 1e-4}})
        write_json(tmp_path / FINGERPRINT_NAME, fingerprint.to_json())
        assert read_fingerprint_file(tmp_path / FINGERPRINT_NAME).digest == fingerprint.digest
    # finite values digest as before (the digest of these values under the earlier code), so no recorded run changes
    written = make_fingerprint("sweep-cell", {"train": {"max_grad_norm": None, "lr": 1e-4}})
    assert written.digest == written.legacy_digest == "75a64831a393155b"
    assert make_fingerprint("sweep-cell", {"train": {"max_grad_norm": float("inf"), "lr": 1e-4}}).digest == \
        "75a64831a393155b"  # the values fingerprint.json holds for it


def test_a_sweep_cell_recorded_under_the_earlier_digest_of_a_non_finite_setting_stays_finished(tmp_path):
    """cell.json files written before the digest was taken over the written values hold the digest of the raw
    inf: such a cell is still finished, not recomputed."""
    from safealign.io.jsonfile import write_json
    from safealign.pipelines.sweep import _finished

    fingerprint = make_fingerprint("sweep-cell", {"train": {"max_grad_norm": float("inf"), "lr": 1e-4}})
    assert fingerprint.legacy_digest == "f225c52e873a7e48" != fingerprint.digest  # /tmp/review-io/fp.json's digest
    write_json(tmp_path / FINGERPRINT_NAME, {**fingerprint.to_json(), "digest": fingerprint.legacy_digest})
    write_json(tmp_path / "cell.json", {"fingerprint": fingerprint.legacy_digest, "figures": {}})
    assert _finished(tmp_path, fingerprint) is not None
    write_json(tmp_path / "cell.json", {"fingerprint": "0" * 16, "figures": {}})
    assert _finished(tmp_path, fingerprint) is None


def test_a_retry_budget_is_how_a_backend_is_reached_and_a_run_that_recorded_one_resumes(tmp_path):
    """Raising model.retry_budget_s after 429s to retry the failed records (retry_errors=true) was refused: the
    budget was fingerprinted beside the excluded timeout_s, max_retries and concurrency."""
    from safealign.io import write_json
    from safealign.io.rundir import differing_keys
    config = EvalConfig()
    recorded = eval_fingerprint(to_dict(config))
    assert recorded.values["model.retry_budget_s"] == 120.0  # still recorded: every run keeps its digest
    config.model.retry_budget_s = 600.0
    raised = eval_fingerprint(to_dict(config))
    (tmp_path / "records.jsonl").write_text("{}\n")
    write_json(tmp_path / FINGERPRINT_NAME, recorded.to_json())
    assert claim_run_dir(tmp_path, raised, outputs=("records.jsonl",)) is True  # continues, not refused
    config.generation.temperature = 0.7
    assert differing_keys(recorded, eval_fingerprint(to_dict(config))) == ["generation.temperature"]


def test_a_demo_or_sweep_cell_resumes_with_settings_its_stages_exclude_changed():
    """A demo, or a cloned sweep continued on another machine, with larger batches, another device or logging cadence
    was refused: its fingerprint held every eval.* and train.* key. They stay recorded (digests unchanged: a sweep
    finds its committed cells by theirs) and are not compared; what decides results still is."""
    from safealign.io.rundir import demo_fingerprint, differing_keys, same_settings
    from safealign.pipelines.demo_config import load_demo_config

    recorded = demo_fingerprint(to_dict(load_demo_config([])))
    moved = load_demo_config(["batch_size=8", "train.reference.batch_size=4", "train.logging_steps=5",
                              "eval.model.device=cpu", "eval.model.retry_budget_s=600"])
    assert demo_fingerprint(to_dict(moved)).digest != recorded.digest  # still recorded
    assert same_settings(recorded, demo_fingerprint(to_dict(moved)))
    cell = make_fingerprint("sweep-cell", {**recorded.values, "variant": "dpo"})
    assert not differing_keys(cell, make_fingerprint("sweep-cell", {**demo_fingerprint(to_dict(moved)).values,
                                                                    "variant": "dpo"}))
    changed = load_demo_config(["batch_size=8", "learning_rate=1e-3", "train_batch_size=2"])
    assert differing_keys(recorded, demo_fingerprint(to_dict(changed))) == [
        "train.learning_rate", "train.per_device_train_batch_size"]

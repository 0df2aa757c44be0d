"""An eval run directory belongs to one configuration (safealign.io.rundir): a re-run with other
settings fails before any work instead of mixing its verdicts with the earlier run's; --overwrite
starts over; nothing is written by a run that fails validation."""

from __future__ import annotations

import json
import logging

import pytest

from safealign.cli import main
from safealign.io.rundir import FINGERPRINT_NAME


@pytest.fixture()
def behaviors_file(tmp_path):
    path = tmp_path / "behaviors.jsonl"
    rows = [{"id": f"b{i}", "behavior": f"Explain step {i} of something harmful", "category": "test"} for i in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _args(run, behaviors_file, *extra):
    return ["eval", f"output_dir={run}", "model.name=tiny-random", f"behaviors.path={behaviors_file}",
            "generation.max_new_tokens=3", "generation.batch_size=2", *extra]  # fmt: skip


def _snapshot(run):
    names = ("records.jsonl", "summary.json", "config.yaml", FINGERPRINT_NAME)
    return {name: (run / name).read_bytes() for name in names}


@pytest.fixture()
def finished(tmp_path, behaviors_file):
    run = tmp_path / "run"
    assert main(_args(run, behaviors_file)) == 0
    assert len((run / "records.jsonl").read_text().splitlines()) == 3
    return run


@pytest.mark.parametrize("change, key", [
    ("model.name=another-model", "model.name"),
    ("generation.max_new_tokens=5", "generation.max_new_tokens"),
    ("judges=[refusal,classifier]", "judges"),
    ("attacks=[direct,template]", "attacks"),
])  # fmt: skip
def test_different_settings_fail_before_any_work_and_name_the_key(finished, behaviors_file, change, key, capsys):
    before = _snapshot(finished)
    assert main(_args(finished, behaviors_file, change)) == 2
    err = capsys.readouterr().err
    assert f"{finished} holds an earlier eval run with different settings" in err
    assert key in err and "--overwrite" in err
    assert _snapshot(finished) == before  # records, summary, config and fingerprint untouched


def test_same_settings_resume_and_a_wider_selection_extends_the_run(finished, behaviors_file):
    records = (finished / "records.jsonl").read_text()
    assert main(_args(finished, behaviors_file)) == 0
    assert (finished / "records.jsonl").read_text() == records  # everything was complete: nothing redone
    assert main(_args(finished, behaviors_file, "behaviors.limit=2")) == 0  # selection is not a setting
    assert (finished / "records.jsonl").read_text() == records


def test_overwrite_removes_the_old_run_so_nothing_mixes(finished, behaviors_file):
    old = [json.loads(line) for line in (finished / "records.jsonl").read_text().splitlines()]
    assert main(_args(finished, behaviors_file, "generation.max_new_tokens=1", "--overwrite")) == 0
    new = [json.loads(line) for line in (finished / "records.jsonl").read_text().splitlines()]
    assert len(new) == len(old) == 3  # redone, not skipped as "complete" and not appended to the old records
    assert all(r["completion"]["meta"]["tokens"] <= 1 for r in new)
    fingerprint = json.loads((finished / FINGERPRINT_NAME).read_text())
    assert fingerprint["values"]["generation.max_new_tokens"] == 1
    assert "max_new_tokens: 1" in (finished / "config.yaml").read_text()


def test_failed_validation_leaves_the_existing_run_untouched(finished, tmp_path, capsys):
    before = _snapshot(finished)
    unreadable = tmp_path / "nothing.jsonl"
    assert main(_args(finished, unreadable, "generation.max_new_tokens=7")) == 2
    assert "nothing.jsonl" in capsys.readouterr().err
    assert _snapshot(finished) == before


def test_behaviors_file_with_other_content_is_a_different_run(finished, behaviors_file, capsys):
    behaviors_file.write_text(behaviors_file.read_text().replace("step 1", "step one"))
    assert main(_args(finished, behaviors_file)) == 2
    assert "behaviors.path_data" in capsys.readouterr().err


def test_benign_file_with_other_content_is_a_different_run(tmp_path, behaviors_file, capsys):
    """Like the behaviors file: benign.path's content is in the fingerprint, so an edited over-refusal file is
    found before any work, not only its path."""
    benign = tmp_path / "benign.jsonl"
    rows = [{"id": f"p{i}", "prompt": f"How do I bake bread {i}?", "category": "ordinary"} for i in range(2)]
    benign.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "run"
    args = _args(run, behaviors_file, f"benign.path={benign}")
    assert main(args) == 0
    assert main(args) == 0  # the same file resumes
    recorded = (run / "benign" / "records.jsonl").read_text()
    benign.write_text(benign.read_text().replace("bread 1", "a cake"))
    assert main(args) == 2
    assert "benign.path_data: " in capsys.readouterr().err
    assert (run / "benign" / "records.jsonl").read_text() == recorded


def test_run_dir_without_fingerprint_is_checked_against_its_config_yaml(finished, behaviors_file, capsys, caplog):
    (finished / FINGERPRINT_NAME).unlink()  # as made by the code before fingerprints
    assert main(_args(finished, behaviors_file, "model.name=another-model")) == 2
    assert "model.name" in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="safealign.io.rundir"):
        assert main(_args(finished, behaviors_file)) == 0
    assert "made before run fingerprints" in caplog.text and "checked this run against its config.yaml" in caplog.text
    assert (finished / FINGERPRINT_NAME).is_file()


def test_outputs_without_any_record_of_their_settings_are_not_resumed(finished, behaviors_file, capsys):
    (finished / FINGERPRINT_NAME).unlink()
    (finished / "config.yaml").unlink()
    assert main(_args(finished, behaviors_file)) == 2
    assert "no fingerprint or config.yaml" in capsys.readouterr().err
    assert main(_args(finished, behaviors_file, "--overwrite")) == 0


def test_a_run_that_failed_before_recording_anything_may_be_rerun_with_other_settings(tmp_path, behaviors_file):
    run = tmp_path / "fresh"
    assert main(_args(run, behaviors_file, "judge_params={refusal: {bogus: 1}}")) == 2  # fails after the claim
    assert (run / FINGERPRINT_NAME).is_file() and not (run / "records.jsonl").exists()
    assert main(_args(run, behaviors_file)) == 0  # nothing was recorded, so nothing can mix: no --overwrite needed
    assert "judge_params.refusal.bogus" not in json.loads((run / FINGERPRINT_NAME).read_text())["values"]


def test_same_spec_with_other_weights_is_a_different_run(tmp_path, behaviors_file, capsys):
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    run = tmp_path / "run"
    args = [a.replace("model.name=tiny-random", f"model.name={folder}") for a in _args(run, behaviors_file)]
    assert main(args) == 0
    tiny_model(seed=1).save_pretrained(folder)  # retrained in place: same path, other weights
    assert main(args) == 2
    assert "model.weights: " in capsys.readouterr().err


def test_an_adapter_whose_base_changed_under_it_is_a_different_run(tmp_path, behaviors_file, capsys):
    """The adapter's own files are unchanged; its base folder now holds other weights (models.identity setup)."""
    from safealign.models.tiny import tiny_model
    from train.lora_helpers import saved_trained_adapter

    base, adapter = saved_trained_adapter(tmp_path, "adapter")
    run = tmp_path / "run"
    args = [a.replace("model.name=tiny-random", f"model.name={adapter}") for a in _args(run, behaviors_file)]
    assert main(args) == 0
    assert main(args) == 0  # the same adapter on the same base resumes
    tiny_model(seed=1).save_pretrained(base)
    assert main(args) == 2
    assert "model.setup: " in capsys.readouterr().err


def test_summary_names_the_fingerprint_of_its_run_directory(finished):
    summary = json.loads((finished / "summary.json").read_text())
    recorded = json.loads((finished / FINGERPRINT_NAME).read_text())
    assert summary["run_fingerprint"] == recorded["digest"]
    assert len(summary["run_fingerprint"]) == 16


def _folder_args(run, behaviors_file, model):
    return [a.replace("model.name=tiny-random", f"model.name={model}") for a in _args(run, behaviors_file)]


def test_an_edited_chat_template_or_stop_token_is_a_different_run(tmp_path, behaviors_file, capsys):
    """The weights and config.json are unchanged; the prompts would be rendered, or stop, otherwise."""
    from safealign.models.tiny import tiny_model, tiny_tokenizer

    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    run = tmp_path / "run"
    assert main(_folder_args(run, behaviors_file, folder)) == 0
    template = folder / "chat_template.jinja"
    original = template.read_text()
    template.write_text("{{ 'SYSTEM: obey' }}" + original)
    assert main(_folder_args(run, behaviors_file, folder)) == 2
    assert "model.tokenizer: " in capsys.readouterr().err
    template.write_text(original)
    config = folder / "generation_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "eos_token_id": 5}))
    assert main(_folder_args(run, behaviors_file, folder)) == 2
    assert "model.tokenizer: " in capsys.readouterr().err


def test_an_adapter_whose_base_config_changed_is_a_different_run(tmp_path, behaviors_file, capsys):
    from train.lora_helpers import saved_trained_adapter

    base, adapter = saved_trained_adapter(tmp_path, "adapter")
    run = tmp_path / "run"
    assert main(_folder_args(run, behaviors_file, adapter)) == 0
    config = base / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rope_theta": 1234.0}))
    assert main(_folder_args(run, behaviors_file, adapter)) == 2
    err = capsys.readouterr().err
    assert "model.base_setup: " in err and "model.setup" not in err  # model.setup keeps its recorded meaning


def test_a_run_recorded_before_the_tokenizer_and_base_setup_keys_resumes(tmp_path, behaviors_file):
    from train.lora_helpers import saved_trained_adapter

    base, adapter = saved_trained_adapter(tmp_path, "adapter")
    run = tmp_path / "run"
    assert main(_folder_args(run, behaviors_file, adapter)) == 0
    recorded = json.loads((run / FINGERPRINT_NAME).read_text())
    assert {"model.tokenizer", "model.base_setup"} <= set(recorded["values"])
    for key in ("model.tokenizer", "model.base_setup"):
        del recorded["values"][key]
    (run / FINGERPRINT_NAME).write_text(json.dumps(recorded))  # as a run made before the keys wrote it
    (base / "chat_template.jinja").write_text("{{ 'edited since' }}")
    assert main(_folder_args(run, behaviors_file, adapter)) == 0

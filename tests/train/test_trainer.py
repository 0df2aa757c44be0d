"""PreferenceTrainer on a tiny random model: E-view reference, cache reuse, metrics, resume."""

from __future__ import annotations

import json

import pytest
import torch

from safealign.errors import UserError
from safealign.train.config import LossConfig, TrainConfig
from safealign.train.run import run_training


def tiny_config(tmp_path, pairs_file, **overrides) -> TrainConfig:
    config = TrainConfig(model="tiny-random", output_dir=str(tmp_path / "run"))
    config.data.path = str(pairs_file)
    config.reference.cache_dir = str(tmp_path / "refcache")
    config.lora.r = 4
    config.lora.alpha = 8
    config.per_device_train_batch_size = 4
    config.max_steps = 4
    config.save_steps = 2
    config.learning_rate = 1e-2
    config.logging_steps = 1
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_dpo_run_writes_metrics_final_adapter_and_summary(tmp_path, pairs_file):
    result = run_training(tiny_config(tmp_path, pairs_file))
    rows = [r for r in read_metrics(result.output_dir) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected", "ranking_accuracy"):
        assert key in rows[0], key
    # step 1 of DPO starts at the reference: margin 0, loss log 2
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert (result.final_dir / "adapter_config.json").exists()
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["examples"] == 8 and summary["input"] == "pair"
    assert "computed" in summary["reference"]


def test_reference_cache_is_reused_across_runs_and_keyed_by_transform(tmp_path, pairs_file):
    first = run_training(tiny_config(tmp_path, pairs_file, max_steps=1))
    second = run_training(tiny_config(tmp_path, pairs_file, max_steps=1, output_dir=str(tmp_path / "run2")))
    assert "computed" in first.reference and "reused" in second.reference
    config = tiny_config(tmp_path, pairs_file, max_steps=1, output_dir=str(tmp_path / "run3"))
    config.reference.transform = "safety_prefix"
    third = run_training(config)
    assert "computed" in third.reference  # a different reference view is a different cache entry
    assert len(list((tmp_path / "refcache").glob("*.safetensors"))) == 2


def test_e_dpo_step0_loss_differs_from_log2_only_through_harmful_rows(tmp_path, pairs_file):
    config = tiny_config(tmp_path, pairs_file, max_steps=1, per_device_train_batch_size=8)
    config.reference.transform = "safety_prefix"
    config.learning_rate = 0.0
    result = run_training(config)
    first = read_metrics(result.output_dir)[0]
    # benign rows keep margin 0; harmful rows get a non-zero anchor shift, so the mean margin is non-zero
    assert first["rewards/margins"] != pytest.approx(0.0, abs=1e-6)
    assert first["loss"] != pytest.approx(0.693147, abs=1e-6)


def test_live_and_cached_reference_give_the_same_first_step(tmp_path, pairs_file):
    results = {}
    for mode in ("cache", "live"):
        config = tiny_config(tmp_path, pairs_file, max_steps=1, output_dir=str(tmp_path / mode))
        config.reference.transform = "safety_prefix"
        config.reference.mode = mode
        results[mode] = read_metrics(run_training(config).output_dir)[0]
    for key in ("loss", "rewards/chosen", "rewards/rejected"):
        assert results["cache"][key] == pytest.approx(results["live"][key], abs=1e-5), key
    assert "live" in json.loads((tmp_path / "live" / "train_summary.json").read_text())["reference"]


class Interrupt(Exception):
    pass


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, pairs_file, monkeypatch):
    full = run_training(tiny_config(tmp_path, pairs_file, output_dir=str(tmp_path / "full"),
                                    per_device_train_batch_size=2))
    config = tiny_config(tmp_path, pairs_file, output_dir=str(tmp_path / "cut"), per_device_train_batch_size=2)

    from safealign.train import trainer as trainer_module

    original = trainer_module.PreferenceTrainer.compute_loss

    def dying(self, *args, **kwargs):
        if self.state.global_step == 3:  # checkpoint-2 exists; die during step 3
            raise Interrupt()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "compute_loss", dying)
    with pytest.raises(Interrupt):
        run_training(config)
    monkeypatch.setattr(trainer_module.PreferenceTrainer, "compute_loss", original)
    resumed = run_training(config, resume=True)
    a = [r for r in read_metrics(full.output_dir) if "loss" in r]
    b = [r for r in read_metrics(resumed.output_dir) if "loss" in r]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-6)
        assert rb["rewards/margins"] == pytest.approx(ra["rewards/margins"], abs=1e-6)
    from safetensors.torch import load_file

    wa = load_file(str(full.final_dir / "adapter_model.safetensors"))
    wb = load_file(str(resumed.final_dir / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


@pytest.mark.parametrize("group_by_length", [False, True])
def test_a_run_resumed_in_its_second_epoch_matches_the_uninterrupted_one(tmp_path, pairs_file, monkeypatch,
                                                                         group_by_length):
    """Killed at step 7 of 2 epochs × 4 steps and resumed from checkpoint-6: the resumed epoch sees its own order
    (a length-grouped epoch once replayed epoch 0's order, training some pairs twice and others not at all)."""
    def config(name):
        return tiny_config(tmp_path, pairs_file, output_dir=str(tmp_path / name), per_device_train_batch_size=2,
                           max_steps=-1, num_train_epochs=2.0, group_by_length=group_by_length)

    from safealign.train import trainer as trainer_module

    original = trainer_module.PreferenceTrainer.compute_loss
    seen: dict[str, list] = {"full": [], "cut": [], "resumed": []}
    run = ["full"]

    def recording(self, model, inputs, *args, **kwargs):
        if run[0] == "cut" and self.state.global_step == 6:
            raise Interrupt()  # checkpoint-6 exists; die during step 7
        seen[run[0]].append((self.state.global_step + 1, sorted(inputs["index"].tolist())))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "compute_loss", recording)
    full = run_training(config("full"))
    run[0] = "cut"
    with pytest.raises(Interrupt):
        run_training(config("cut"))
    run[0] = "resumed"
    resumed = run_training(config("cut"), resume=True)
    assert seen["cut"] == seen["full"][:6] and seen["resumed"] == seen["full"][6:]  # steps 7-8: the same pairs
    from safetensors.torch import load_file

    wa = load_file(str(full.final_dir / "adapter_model.safetensors"))
    wb = load_file(str(resumed.final_dir / "adapter_model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path, pairs_file, monkeypatch):
    config = tiny_config(tmp_path, pairs_file, per_device_train_batch_size=2)
    from safealign.train import trainer as trainer_module

    original = trainer_module.PreferenceTrainer._pair_logps

    def poisoned(self, model, inputs):
        x = original(self, model, inputs)
        if self.state.global_step == 2:
            return type(x)(**{**x.__dict__, "chosen": x.chosen * float("nan")})
        return x

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "_pair_logps", poisoned)
    with pytest.raises(trainer_module.NonFiniteLossError, match="at step 2"):
        run_training(config)
    assert (tmp_path / "run" / "checkpoint-2").is_dir()


def test_reference_free_loss_runs_without_reference(tmp_path, pairs_file):
    config = tiny_config(tmp_path, pairs_file, max_steps=1)
    config.losses = [LossConfig(name="simpo", params={"beta": 2.0, "gamma": 0.5})]
    result = run_training(config)
    assert result.reference.startswith("none")
    assert not (tmp_path / "refcache").exists()


def test_loss_state_is_checkpointed_and_resume_matches_uninterrupted(tmp_path, pairs_file, monkeypatch):
    # bco_pair's running mean δ spans steps: a resume that lost it would log a different δ and loss at step 3
    def bco(run):
        config = tiny_config(tmp_path, pairs_file, output_dir=str(tmp_path / run), per_device_train_batch_size=2)
        config.losses = [LossConfig(name="bco_pair", params={"beta": 0.5})]
        return config

    full = run_training(bco("full"))
    saved = json.loads((tmp_path / "full" / "checkpoint-2" / "loss_state.json").read_text())
    assert saved["bco_pair"]["count"] == 8  # 2 steps x 2 pairs x (chosen, rejected) rewards

    from safealign.train import trainer as trainer_module

    original = trainer_module.PreferenceTrainer.compute_loss

    def dying(self, *args, **kwargs):
        if self.state.global_step == 3:
            raise Interrupt()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "compute_loss", dying)
    with pytest.raises(Interrupt):
        run_training(bco("cut"))
    monkeypatch.setattr(trainer_module.PreferenceTrainer, "compute_loss", original)
    resumed = run_training(bco("cut"), resume=True)
    a = [r for r in read_metrics(full.output_dir) if "loss" in r]
    b = [r for r in read_metrics(resumed.output_dir) if "loss" in r]
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a[2]["bco/delta"] != pytest.approx(a[1]["bco/delta"], abs=1e-9)
    for ra, rb in zip(a, b):
        for key in ("loss", "bco/delta", "rewards/margins"):
            assert rb[key] == pytest.approx(ra[key], abs=1e-6), (ra["step"], key)


def test_entanglement_probe_is_written_when_configured(tmp_path, pairs_file):
    config = tiny_config(tmp_path, pairs_file, max_steps=2)
    config.diagnostics.entanglement_every = 1
    config.diagnostics.probe_pairs = 2
    result = run_training(config)
    rows = [json.loads(line) for line in (result.output_dir / "diagnostics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["probe_pairs"] == 2 for r in rows)
    assert rows[0]["delta_chosen"] == pytest.approx(0.0, abs=1e-6)  # movement is measured from step 0


SHARDED = [({"fsdp": "full_shard auto_wrap"}, "training_args.fsdp"), ({"fsdp": True}, "training_args.fsdp"),
           ({"deepspeed": {"zero_optimization": {"stage": 3}}}, "ZeRO stage 3"),
           ({"deepspeed": "ds_zero3.json"}, "ZeRO stage 3")]


@pytest.mark.parametrize("training_args, named", SHARDED)
def test_entanglement_probe_is_refused_under_sharded_parameters_before_a_model_loads(tmp_path, pairs_file,
                                                                                    no_model_load, training_args,
                                                                                    named):
    """The probe runs forward and backward on the main process alone: FSDP and ZeRO-3 would wait there for the other
    processes' shards until ddp_timeout, so such a run is refused instead, before anything loads."""
    (tmp_path / "ds_zero3.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    if training_args.get("deepspeed") == "ds_zero3.json":
        training_args = {"deepspeed": str(tmp_path / "ds_zero3.json")}
    config = tiny_config(tmp_path, pairs_file, training_args=training_args)
    config.diagnostics.entanglement_every = 1
    with pytest.raises(UserError, match=f"diagnostics.entanglement_every=1: .*{named}.*entanglement_every=0"):
        run_training(config)


@pytest.mark.parametrize("training_args", [{}, {"fsdp": ""}, {"fsdp": None},
                                           {"deepspeed": {"zero_optimization": {"stage": 2}}}, {"deepspeed": {}}])
def test_entanglement_probe_is_allowed_where_every_process_holds_whole_parameters(tmp_path, pairs_file,
                                                                                 training_args):
    from safealign.train.run import check_diagnostics

    config = tiny_config(tmp_path, pairs_file, training_args=training_args)
    config.diagnostics.entanglement_every = 1
    check_diagnostics(config)
    config.diagnostics.entanglement_every = 0  # off: nothing to refuse, whatever shards the parameters
    config.training_args = {"fsdp": True}
    check_diagnostics(config)


def test_non_finite_loss_is_a_one_line_cli_error_with_the_step(tmp_path, pairs_file, monkeypatch, capsys):
    import yaml

    from safealign.cli import main
    from safealign.config import to_dict
    from safealign.train import trainer as trainer_module

    original = trainer_module.PreferenceTrainer._pair_logps

    def poisoned(self, model, inputs):
        x = original(self, model, inputs)
        return type(x)(**{**x.__dict__, "chosen": x.chosen * float("nan")}) if self.state.global_step == 1 else x

    monkeypatch.setattr(trainer_module.PreferenceTrainer, "_pair_logps", poisoned)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(to_dict(tiny_config(tmp_path, pairs_file, per_device_train_batch_size=2))))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "loss is nan at step 1" in err and "Traceback" not in err


def test_train_summary_names_starting_and_final_weights(tmp_path, pairs_file):
    from safealign.models.identity import model_identity, weights_fingerprint

    config = tiny_config(tmp_path, pairs_file, max_steps=2)
    config.reference.model = "tiny-random"
    result = run_training(config)
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    start = model_identity("tiny-random")
    assert summary["model_identity"] == start and summary["reference_identity"] == start
    final = summary["final_identity"]
    assert final["kind"] == "adapter" and final["path"] == str(result.final_dir.resolve())
    assert final["fingerprint"] == weights_fingerprint(result.final_dir) and final["base"] == start
    recorded = json.loads((result.output_dir / "fingerprint.json").read_text())
    assert summary["run_fingerprint"] == recorded["digest"]


def test_duplicate_rows_are_counted_in_the_training_summary(tmp_path, pairs_file, caplog):
    lines = pairs_file.read_text().splitlines()
    pairs_file.write_text("\n".join([*lines, lines[0], lines[0]]) + "\n")  # row 0 twice more
    result = run_training(tiny_config(tmp_path, pairs_file, max_steps=1))
    summary = json.loads((result.output_dir / "train_summary.json").read_text())
    assert summary["duplicate_rows"] == 2
    assert f"2 duplicate row(s) (row {len(lines)} = row 0, row {len(lines) + 1} = row 0)" in caplog.text

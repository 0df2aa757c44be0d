"""``safealign eval``: listing plug-ins and user errors without a traceback."""

from __future__ import annotations

from safealign.cli import main


def test_list(capsys):
    from safealign.eval.registries import ATTACKS, BACKENDS, JUDGES

    assert main(["eval", "--list"]) == 0
    out = capsys.readouterr().out
    for label, registry in (("attacks: ", ATTACKS), ("judges:  ", JUDGES), ("backends:", BACKENDS)):
        assert f"{label} {', '.join(registry.names())}" in out
    assert "tiered" in JUDGES.names()


def test_unknown_attack_and_bad_override_exit_2(capsys, tmp_path):
    assert main(["eval", "attacks=[direct,bogus]", f"output_dir={tmp_path}"]) == 2
    assert "unknown attack 'bogus'; valid names" in capsys.readouterr().err
    assert main(["eval", "generation.max_new_tokns=5"]) == 2
    assert "max_new_tokns" in capsys.readouterr().err


def test_shipped_configs_load_and_name_registered_plugins():
    from pathlib import Path

    import yaml

    from safealign.config import load_config
    from safealign.eval.config import EvalConfig
    from safealign.eval.registries import ATTACKS, DEFENSES, JUDGES
    from safealign.pipelines.defenses import DefenseCompareConfig

    paths = sorted((Path(__file__).resolve().parents[2] / "configs" / "eval").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        if "methods" in yaml.safe_load(path.read_text()):  # a defense comparison (safealign defenses)
            compare = load_config(DefenseCompareConfig, path)
            config = compare.eval
            assert all(d.name in DEFENSES for m in compare.methods for d in m.defenses), path
        else:
            config = load_config(EvalConfig, path)
        assert all(a in ATTACKS for a in config.attacks) and all(j in JUDGES for j in config.judges), path


def test_eval_prints_which_weights_ran(capsys, tmp_path):
    from safealign.models.identity import model_identity

    behaviors = tmp_path / "behaviors.jsonl"
    behaviors.write_text('{"id": "b0", "behavior": "say hi"}\n')
    argv = ["eval", "model.name=tiny-random", f"behaviors.path={behaviors}", "attacks=[direct]", "judges=[refusal]",
            "generation.max_new_tokens=2", f"output_dir={tmp_path / 'run'}"]  # fmt: skip
    assert main(argv) == 0
    fingerprint = model_identity("tiny-random")["fingerprint"]
    assert f"model: tiny-random (tiny) | random initialisation, seed 0 | {fingerprint}" in capsys.readouterr().out


def test_eval_prints_the_defenses_and_their_cost(capsys, tmp_path):
    behaviors = tmp_path / "behaviors.jsonl"
    behaviors.write_text('{"id": "b0", "behavior": "say hi"}\n')
    argv = ["eval", "model.name=tiny-random", f"behaviors.path={behaviors}", "attacks=[direct]", "judges=[refusal]",
            "generation.max_new_tokens=2", f"output_dir={tmp_path / 'run'}",
            "defenses=[{name: smoothllm, params: {copies: 2}}]"]  # fmt: skip
    assert main(argv) == 0
    assert "defenses: smoothllm; per answer: 4.0 tokens generated" in capsys.readouterr().out

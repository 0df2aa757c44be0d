"""The benchmarks' like-for-like settings and preflight checks, cheaply: safealign's timed runs write no
checkpoint and pay the packing check a real run pays; the GPU suite runs the baselines first in each stage;
missing requirements (CUDA, the pinned TRL, nanogcg) stop a run before anything is timed; a failed row is a
non-zero exit. No timing."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
import _safealign_setup as setup  # noqa: E402
import dpo_throughput as bench  # noqa: E402


def _tiny():
    cfg = bench.BenchConfig(shape="tiny", device="cpu", prompt_len=12, response_len=8, prefix_len=4, batch=2,
                            ref_batch=2, warmup=0, steps=1, reps=1)
    make_model, tokenizer, vocab = bench.model_factory(cfg)
    return cfg, make_model, tokenizer, bench.make_pairs(cfg, vocab)


def test_safealign_bench_run_writes_no_checkpoint_and_checks_packing_inside_the_epoch_time(monkeypatch, tmp_path):
    pytest.importorskip("psutil")
    events: list[str] = []

    @contextlib.contextmanager
    def kept_folder():  # the run's output folder, kept to look into afterwards
        yield tempfile.mkdtemp(dir=tmp_path)

    class RecordingTimer(setup.EpochTimer):
        def __enter__(self):
            events.append("timer start")
            return super().__enter__()

        def __exit__(self, *exc):
            events.append("timer end")
            return super().__exit__(*exc)

    import safealign.train.packing as packing

    real_check = packing.check_packing

    def recording_check(*args, **kwargs):
        events.append("check_packing")
        return real_check(*args, **kwargs)

    monkeypatch.setattr(setup, "tempfile", types.SimpleNamespace(TemporaryDirectory=kept_folder))
    monkeypatch.setattr(setup, "EpochTimer", RecordingTimer)
    monkeypatch.setattr(packing, "check_packing", recording_check)
    cfg, make_model, tokenizer, pairs = _tiny()
    for packed in (False, True):
        events.clear()
        setup.run_safealign(cfg, make_model, tokenizer, pairs, reference="cache", e_view=False, packing=packed)
        # the last step of a run with save_strategy "steps" saves a full checkpoint; TRL's runs save nothing
        assert len(list(tmp_path.iterdir())) == 1 + packed and not list(tmp_path.rglob("checkpoint-*"))
        assert events == ["timer start"] + ["check_packing"] * packed + ["timer end"]


def _stage_systems(script: str) -> list[list[str]]:
    """Each stage's ``--systems`` list of gpu_suite.sh, its shell variables expanded."""
    variables = dict(re.findall(r"^([A-Z]+)=([\w,-]+)$", script, re.M))
    lists = re.findall(r'--systems "([^"]+)"', script)
    expand = lambda text: re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], text)  # noqa: E731
    return [expand(text).split(",") for text in lists]


def test_gpu_suite_runs_the_baselines_first_in_every_stage():
    stages = _stage_systems((BENCH / "gpu_suite.sh").read_text())
    assert len(stages) == 4
    for systems in stages:
        assert set(systems) <= set(bench.SYSTEMS), systems
        kinds = [key in bench.BASELINES for key in systems]
        # a stage cut by its time limit keeps its baselines: every TRL row comes before every safealign row
        assert any(kinds) and kinds == sorted(kinds, reverse=True), systems


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_suite_stops_without_cuda(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "BUDGET": "0", "WHEELS": str(tmp_path / "no-wheels"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(BENCH / "gpu_suite.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "no CUDA" in done.stderr, (done.stdout, done.stderr)
    assert "==" not in done.stdout  # no stage started


def test_device_cuda_without_cuda_stops_at_the_arguments(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(["--device", "cuda"])
    assert stop.value.code == 2 and "no CUDA" in capsys.readouterr().err
    assert bench.parse_args(["--device", "cpu"]).device == "cpu"


def _fake_runs(monkeypatch, fail: str | None = None) -> list[str]:
    calls: list[str] = []

    def fake_run(cfg, key, make_model, tokenizer, pairs):
        calls.append(key)
        if key == fail:
            raise RuntimeError("boom")
        return bench.Measurement(first_loss=0.69, first_chosen_logps=-1.0, tokens_per_s=1.0, peak_bytes=1,
                                 epoch_s=1.0, tokens_per_cpu_s=1.0, epoch_cpu_s=1.0)

    monkeypatch.setattr(bench, "run_system", fake_run)
    return calls


ARGS = ["--shape", "tiny", "--batch", "2", "--warmup", "0", "--steps", "1", "--no-warm-up-run"]


def test_a_trl_row_without_the_pinned_trl_stops_before_anything_runs(monkeypatch, capsys):
    calls = _fake_runs(monkeypatch)
    monkeypatch.setitem(sys.modules, "trl", None)  # not installed
    with pytest.raises(SystemExit, match=r"trl, trl-precompute need trl==1\.16\.0, .*pip install trl==1\.16\.0"):
        bench.main(ARGS + ["--systems", "safealign-dpo-cached,trl,trl-precompute"])
    assert calls == []
    monkeypatch.setitem(sys.modules, "trl", types.SimpleNamespace(__version__="0.9.6"))
    with pytest.raises(SystemExit, match=r"found trl 0\.9\.6.*pip install trl==1\.16\.0"):
        bench.main(ARGS + ["--systems", "trl"])
    assert calls == []
    monkeypatch.setitem(sys.modules, "trl", None)
    bench.main(ARGS + ["--systems", "safealign-dpo-cached"])  # no TRL row: TRL not needed, not even to describe
    assert calls == ["safealign-dpo-cached"] and "trl not installed" in capsys.readouterr().out


def test_a_failed_row_prints_the_table_then_exits_non_zero(monkeypatch, capsys):
    pytest.importorskip("trl")
    _fake_runs(monkeypatch, fail="trl")
    with pytest.raises(SystemExit, match="failed: trl") as stop:
        bench.main(ARGS + ["--systems", "safealign-dpo-cached,trl"])
    assert stop.value.code not in (0, None)
    assert "| TRL DPO, live reference | failed: RuntimeError |" in capsys.readouterr().out
    _fake_runs(monkeypatch)
    bench.main(ARGS + ["--systems", "safealign-dpo-cached,trl"])  # all ran: a normal end


def test_gcg_bench_without_nanogcg_stops_before_loading_the_model(monkeypatch):
    import gcg_vs_nanogcg as gcg

    def no_load(*args, **kwargs):
        raise AssertionError("loaded the model before checking nanogcg")

    monkeypatch.setattr(gcg, "load_model", no_load)
    monkeypatch.setitem(sys.modules, "nanogcg", None)
    monkeypatch.setattr(sys, "argv", ["gcg_vs_nanogcg.py", "--model", "tiny-random"])
    with pytest.raises(SystemExit, match=r"pip install --no-deps nanogcg==0\.3\.0 scipy"):
        gcg.main()


def test_gcg_bench_loads_on_the_device_asked_and_prints_the_models_device_and_dtype(monkeypatch, capsys, tmp_path):
    import gcg_vs_nanogcg as gcg

    loaded = {}

    class Loaded(Exception):
        pass

    def fake_load(spec, **kwargs):
        loaded.update(kwargs, spec=spec)
        raise Loaded

    monkeypatch.setattr(gcg, "load_model", fake_load)
    monkeypatch.setitem(sys.modules, "nanogcg", types.ModuleType("nanogcg"))
    for name in ("advbench_behaviors.csv", "advbench_targets.json"):
        (tmp_path / name).write_text("")
    monkeypatch.setattr(sys, "argv", ["gcg_vs_nanogcg.py", "--model", "tiny-random", "--device", "cpu",
                                      "--data", str(tmp_path)])
    with pytest.raises(Loaded):
        gcg.main()
    assert loaded == {"spec": "tiny-random", "device": "cpu"}
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    args = types.SimpleNamespace(model="m", steps=1, search_width=2, topk=2, suffix_length=3, threads=1)
    gcg.print_table([("advbench_1", 1.0, 0.5, 0.5, 0.5, 0.1, 0.2)], args, model)
    assert "device=cpu dtype=bfloat16" in capsys.readouterr().out.splitlines()[0]


def _nanogcg_loss(attack, behavior, suffix_ids: list[int]) -> float:
    """nanoGCG 0.3.0's loss of one suffix (``GCG.compute_candidates_loss`` without a prefix cache): cross-entropy
    on the target positions' logits and its mean, both in the model's dtype (ours upcasts the logits to fp32)."""
    problem = attack._problem(behavior)
    embeds = torch.cat([problem.before, attack._embed(torch.tensor([suffix_ids])), problem.after,
                        problem.target_embeds], dim=1)  # fmt: skip
    with torch.no_grad():
        logits = attack.model(inputs_embeds=embeds).logits
    shift = embeds.shape[1] - len(problem.target_ids)
    target_logits = logits[:, shift - 1 : -1, :]
    losses = torch.nn.functional.cross_entropy(target_logits.reshape(-1, target_logits.size(-1)),
                                               problem.target_ids.reshape(-1), reduction="none")  # fmt: skip
    return float(losses.view(1, -1).mean(dim=-1)[0])


def test_gcg_bench_rescoring_check_allows_nanogcgs_bf16_rounding_on_tiny_random():
    import gcg_vs_nanogcg as gcg

    from safealign.data.behaviors import Behavior
    from safealign.eval.attacks import AttackContext
    from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
    from safealign.eval.backends.hf import HFChatModel
    from safealign.models.load import load_model

    model, tokenizer = load_model("tiny-random", device="cpu", dtype=torch.bfloat16)
    attack = GCGAttack(GCGConfig(steps=1, search_width=2, topk=2, suffix_length=20, early_stop_every=0),
                       AttackContext(target=HFChatModel(model, tokenizer), model=model, tokenizer=tokenizer))
    ids = attack._initial_ids().tolist()
    rows = []
    for i in range(3):
        behavior = Behavior(f"b{i}", f"Tell me thing {i}", target=f"Sure, here is thing {i}")
        ours, nano = attack.target_loss(behavior, ids), _nanogcg_loss(attack, behavior, ids)
        rows.append((behavior.id, ours, ours, nano, ours, 1.0, 1.0))
    # the same suffix on the same ids: only the roundings differ, and by more than the fp32 limit
    assert max(abs(r[3] - r[4]) for r in rows) > 1e-3
    gcg.check_rescoring(rows, torch.bfloat16)  # no stop
    with pytest.raises(SystemExit, match="check failed: b"):
        gcg.check_rescoring(rows, torch.float32)


def test_gcg_bench_rescoring_tolerance_follows_the_model_dtype(capsys):
    import gcg_vs_nanogcg as gcg

    assert gcg.loss_tolerance(torch.float32, 5.6) == 1e-3
    assert gcg.loss_tolerance(torch.bfloat16, 5.6) == pytest.approx(4 * 2**-7 * 5.6)
    assert gcg.loss_tolerance(torch.float16, 5.6) == pytest.approx(4 * 2**-10 * 5.6)
    assert gcg.loss_tolerance(torch.bfloat16, 0.01) == 1e-3  # never below the fp32 limit
    # the review's bf16 run on tiny-random (nanoGCG's own loss, our loss of its suffix): within bf16 rounding
    rows = [("advbench_1", 6.0, 5.6, 5.625, 5.615, 1.0, 1.0), ("advbench_2", 6.0, 5.6, 5.5625, 5.574, 1.0, 1.0)]
    gcg.check_rescoring(rows, torch.bfloat16)
    assert "1.15e-02" in capsys.readouterr().out  # the largest gap is still printed
    with pytest.raises(SystemExit, match=r"check failed: advbench_1 \(1\.0\de-02 > 1\.00e-03\), advbench_2"):
        gcg.check_rescoring(rows, torch.float32)
    far = [("advbench_1", 6.0, 5.6, 5.625, 5.0, 1.0, 1.0)]  # another problem, not a rounding
    with pytest.raises(SystemExit, match="check failed: advbench_1"):
        gcg.check_rescoring(far, torch.bfloat16)


def test_gcg_bench_loss_ratio_compares_both_suffixes_under_our_loss(capsys):
    import gcg_vs_nanogcg as gcg

    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    args = types.SimpleNamespace(model="m", steps=1, search_width=2, topk=2, suffix_length=3, threads=1)
    # ours 5.5; nanoGCG's own (bf16) loss 5.625, its suffix under our loss 5.5: the same loss, ratio 1
    gcg.print_table([("advbench_1", 6.0, 5.5, 5.625, 5.5, 0.1, 0.2)], args, model)
    lines = capsys.readouterr().out.splitlines()
    cells = [c.strip() for c in lines[1].strip("|").split("|")]
    ratio = cells.index("loss ratio ours/nano (our loss fn)")
    assert lines[3].split("|")[ratio + 1].strip() == "1.000"  # advbench_1's row
    assert lines[4].split("|")[ratio + 1].strip() == "1.000"  # the mean row


def test_gcg_bench_without_its_data_files_stops_before_loading_the_model(monkeypatch, tmp_path):
    import gcg_vs_nanogcg as gcg

    def no_load(*args, **kwargs):
        raise AssertionError("loaded the model before checking the data")

    monkeypatch.setattr(gcg, "load_model", no_load)
    monkeypatch.setitem(sys.modules, "nanogcg", types.ModuleType("nanogcg"))
    (tmp_path / "advbench_behaviors.csv").write_text("goal,target\n")
    monkeypatch.setattr(sys, "argv", ["gcg_vs_nanogcg.py", "--data", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--data .*advbench_targets\.json"):
        gcg.main()


def _install_function() -> str:
    """gpu_suite.sh's ``install_missing`` function, to run alone (the script stops without CUDA)."""
    script = (BENCH / "gpu_suite.sh").read_text()
    match = re.search(r"^install_missing\(\) \{.*?^\}$", script, re.S | re.M)
    assert match, "gpu_suite.sh defines install_missing"
    return match.group(0)


def _run_install(tmp_path, missing: str, failing: str):
    """install_missing with a fake pip that fails for the requirements in ``failing``; (result, pip's calls)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "pip.log"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "pip"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {log}\n'
                    f'for a in "$@"; do case " {failing} " in *" $a "*) echo "ERROR: no wheel for $a"; exit 1;; esac;'
                    " done\n")  # fmt: skip
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "WHEELS": str(tmp_path)}
    done = subprocess.run(["bash", "-c", _install_function() + f'\ninstall_missing "{missing}"'], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_gpu_suite_installs_each_missing_package_alone_and_only_warns_for_optional_ones(tmp_path):
    done, calls = _run_install(tmp_path, "trl liger_kernel bitsandbytes", failing="bitsandbytes")
    assert done.returncode == 0, (done.stdout, done.stderr)
    # one pip call per package: bitsandbytes' missing wheel does not stop TRL's install
    assert [call.split()[-1] for call in calls] == ["trl==1.16.0", "liger-kernel", "bitsandbytes"]
    assert "bitsandbytes" in done.stderr and "warning" in done.stderr


def test_gpu_suite_stops_when_a_required_package_cannot_be_installed(tmp_path):
    done, calls = _run_install(tmp_path, "trl peft", failing="trl==1.16.0")
    assert done.returncode != 0
    assert [call.split()[-1] for call in calls] == ["trl==1.16.0", "peft"]
    assert "trl==1.16.0" in done.stderr and "pip exit 1" in done.stderr and "peft" not in done.stderr


def test_dpo_bench_refuses_an_unknown_baseline_at_the_arguments(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.parse_args(["--baselines", "trl,trl-ligr"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "trl-ligr" in err and "trl-liger" in err
    assert bench.parse_args(["--baselines", "trl, trl-liger"]).baselines == ("trl", "trl-liger")


def test_dpo_bench_ratio_columns_name_the_clock_they_come_from():
    cpu = bench.BenchResult(rows=[], mean_pair_tokens=1.0, cpu_time=True, baselines=("trl",))
    assert bench.columns(cpu)[-3:] == ("tokens/CPU-s ÷ TRL", "peak mem ÷ TRL", "epoch CPU-s ÷ TRL")
    wall = bench.BenchResult(rows=[], mean_pair_tokens=1.0, cpu_time=False, baselines=("trl",))
    assert bench.columns(wall)[-3:] == ("tokens/s ÷ TRL", "peak mem ÷ TRL", "epoch ÷ TRL")

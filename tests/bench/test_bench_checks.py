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


def test_gcg_bench_loads_on_the_device_asked_and_prints_the_models_device_and_dtype(monkeypatch, capsys):
    import gcg_vs_nanogcg as gcg

    loaded = {}

    class Loaded(Exception):
        pass

    def fake_load(spec, **kwargs):
        loaded.update(kwargs, spec=spec)
        raise Loaded

    monkeypatch.setattr(gcg, "load_model", fake_load)
    monkeypatch.setitem(sys.modules, "nanogcg", types.ModuleType("nanogcg"))
    monkeypatch.setattr(sys, "argv", ["gcg_vs_nanogcg.py", "--model", "tiny-random", "--device", "cpu"])
    with pytest.raises(Loaded):
        gcg.main()
    assert loaded == {"spec": "tiny-random", "device": "cpu"}
    model = torch.nn.Linear(2, 2).to(torch.bfloat16)
    args = types.SimpleNamespace(model="m", steps=1, search_width=2, topk=2, suffix_length=3, threads=1)
    gcg.print_table([("advbench_1", 1.0, 0.5, 0.5, 0.5, 0.1, 0.2)], args, model)
    assert "device=cpu dtype=bfloat16" in capsys.readouterr().out.splitlines()[0]

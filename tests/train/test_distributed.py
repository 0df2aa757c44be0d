"""Two processes under ``accelerate launch`` train exactly like one process with the same global batch.

``accelerate launch --multi_gpu --num_processes 2`` starts two ``python -m safealign train`` workers
through torchrun; with ``training_args.use_cpu`` they run on CPU and talk over gloo, also where CUDA
exists. (``accelerate launch --cpu --num_processes 2`` would start only one process: accelerate runs
several CPU processes only through mpirun.) Each worker gets 2 rows per step, the single process 4, so
both see the same 4 rows of the same seeded shuffle per step; DDP averages the two gradients, which for
equal shards is the gradient of the 4-row mean. LoRA dropout is off: dropout masks are drawn per
process, so no two process layouts could agree with it on.

Checked per logged step: the loss, the gradient norm, the learning rate and every alignment metric
(gathered over processes as sums and counts, ``safealign.train.metrics``), to 1e-5 (relative, or
absolute near zero: float32 sums over differently padded batches differ in the last bits).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from safealign.config import load_config
from safealign.train.config import TrainConfig
from safealign.train.run import run_training

pytest.importorskip("accelerate")

STEPS = 3


def recipe(tmp_path, pairs_file, mode: str, name: str, batch: int, **extra):
    config = {
        "model": "tiny-random", "output_dir": str(tmp_path / name), "data": {"path": str(pairs_file)},
        # E-DPO: the reference scores another prompt than the policy, so its log-probs are not the policy's
        "reference": {"mode": mode, "transform": "safety_prefix", "cache_dir": str(tmp_path / f"{name}-cache")},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "max_steps": STEPS, "per_device_train_batch_size": batch, "learning_rate": 1e-2, "logging_steps": 1,
        "save_steps": 1000, "training_args": {"use_cpu": True}, **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_processes(path) -> str:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "safealign", "train", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def logged_steps(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


@pytest.mark.parametrize("mode", ["cache", "live"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, pairs_file, mode):
    stdout = launch_two_processes(recipe(tmp_path, pairs_file, mode, "two", batch=2))
    assert stdout.count(f"trained {STEPS} steps") == 2  # both workers trained
    single = run_training(load_config(TrainConfig, recipe(tmp_path, pairs_file, mode, "one", batch=4)))
    two, one = logged_steps(tmp_path / "two"), logged_steps(single.output_dir)
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(1, STEPS + 1))
    for got, expected in zip(two, one):
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (got["step"], key)
    # the reference is doing something: E-DPO's first step is not at log 2, and later margins move
    assert one[0]["loss"] != pytest.approx(0.693147, abs=1e-4)
    summary = json.loads((tmp_path / "two" / "train_summary.json").read_text())
    expected_reference = "computed" if mode == "cache" else "live reference forward (policy with LoRA adapter disabled)"
    assert expected_reference in summary["reference"] and summary["steps"] == STEPS


@pytest.mark.parametrize("loss, statistic", [("kto", "kto/kl"), ("bco", "bco/delta")])
def test_unpaired_statistics_are_global_under_two_processes(tmp_path, pairs_file, loss, statistic):
    """KTO's reference point z (from the gathered KL columns) and BCO's running δ (RunningMean.reduce gathers) are
    one estimate over the global batch: two processes log the loss and the statistic of one process with the
    same global batch, and the loss state saved from the main process is that global one."""
    extra = {"losses": [{"name": loss}], "data": {"path": str(pairs_file), "unpair": True}, "save_steps": STEPS}
    launch_two_processes(recipe(tmp_path, pairs_file, "cache", "two", batch=2, **extra))
    single = run_training(load_config(TrainConfig, recipe(tmp_path, pairs_file, "cache", "one", batch=4, **extra)))
    two, one = logged_steps(tmp_path / "two"), logged_steps(single.output_dir)
    assert len(two) == len(one) == STEPS
    assert any(row[statistic] != pytest.approx(0.0, abs=1e-6) for row in one)  # the statistic is doing something
    for got, expected in zip(two, one):
        for key in ("loss", statistic, "rewards/chosen", "rewards/rejected"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-5), (got["step"], key)
    if loss == "bco":  # the checkpointed δ is the global running mean, as one process has it
        state = [json.loads((run / f"checkpoint-{STEPS}" / "loss_state.json").read_text())
                 for run in (tmp_path / "two", single.output_dir)]
        assert state[0]["bco"]["count"] == state[1]["bco"]["count"] == 4 * STEPS  # 4 rewards per global step
        assert state[0]["bco"]["total"] == pytest.approx(state[1]["bco"]["total"], rel=1e-5, abs=1e-6)

"""SIGTERM during generation: the run stops at the next generation step, drops the cut batch, keeps every
record written before it, writes a partial summary and exits non-zero with a message; a re-run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from safealign.cli import main
from safealign.eval.backends.base import GenerationParams
from safealign.eval.backends.hf import HFChatModel
from safealign.interrupt import StopRequested, request_stop, stop_on_sigterm

# Runs `safealign eval` on tiny-random whose forward never emits EOS/pad (so every batch runs all its
# max_new_tokens) and, once the first batch is recorded, sleeps per step: a long generation step.
SLOW_EVAL = '''
import os, sys, time
from safealign.models import load as load_mod

original = load_mod.load_model

def slowed(*args, **kwargs):
    model, tok = original(*args, **kwargs)
    forward = model.forward
    def step(*a, **kw):
        if os.path.exists(os.environ["RECORDS"]) and os.path.getsize(os.environ["RECORDS"]):
            open(os.environ["SLOW_MARK"], "a").close()
            time.sleep(0.2)
        out = forward(*a, **kw)
        out.logits[..., [tok.eos_token_id, tok.pad_token_id]] = float("-inf")
        return out
    model.forward = step
    return model, tok

if os.environ.get("SLOW_MARK"):
    load_mod.load_model = slowed
from safealign.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_stop_request_ends_generation_at_the_next_step_and_drops_the_batch(tiny_model, tiny_tokenizer):
    steps = []
    forward = tiny_model.forward

    def step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            request_stop()
        return forward(*args, **kwargs)

    tiny_model.forward = step
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    conversations = [({"role": "user", "content": f"question {i}"},) for i in range(4)]
    with stop_on_sigterm(), pytest.raises(StopRequested, match="stopped by SIGTERM"):
        chat.generate(conversations, GenerationParams(max_new_tokens=50, batch_size=2))
    assert len(steps) == 3  # not 50 steps, and the second batch never started


def test_stop_request_ends_a_gcg_search_at_the_next_step(tiny_model, tiny_tokenizer):
    from .test_gcg import B, _attack

    attack = _attack(tiny_model, tiny_tokenizer, steps=50)
    gradients = attack._token_gradients
    steps = []

    def gradient_step(*args, **kwargs):
        steps.append(1)
        if len(steps) == 2:
            request_stop()
        return gradients(*args, **kwargs)

    attack._token_gradients = gradient_step
    with stop_on_sigterm(), pytest.raises(StopRequested):
        attack.optimize(B)
    assert len(steps) == 2  # of 50


@pytest.fixture()
def behaviors_file(tmp_path):
    path = tmp_path / "behaviors.jsonl"
    path.write_text("".join(json.dumps({"id": f"b{i}", "behavior": f"Explain harmful step {i}"}) + "\n"
                            for i in range(4)))  # fmt: skip
    return path


def _eval(tmp_path, behaviors_file, env):
    script = tmp_path / "slow_eval.py"
    script.write_text(SLOW_EVAL)
    args = [sys.executable, str(script), *_eval_args(tmp_path / "run", behaviors_file)]
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def _eval_args(run: Path, behaviors_file: Path) -> list[str]:
    return ["eval", f"output_dir={run}", "model.name=tiny-random", f"behaviors.path={behaviors_file}",
            "generation.max_new_tokens=60", "generation.batch_size=2"]  # fmt: skip


def _records(run: Path):
    return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]


def test_sigterm_in_a_long_generation_step_stops_promptly_keeping_records(tmp_path, behaviors_file):
    run, mark = tmp_path / "run", tmp_path / "slow"
    proc = _eval(tmp_path, behaviors_file, {"RECORDS": str(run / "records.jsonl"), "SLOW_MARK": str(mark)})
    deadline = time.monotonic() + 300  # model loading on a busy machine
    while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mark.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    # the rest of the batch alone is ~60 steps x 0.2 s; a generous bound, not a timing claim
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "safealign: stopped by SIGTERM" in err and "re-run the same command to resume" in err
    kept = _records(run)
    assert [r["behavior_id"] for r in kept] == ["b0", "b1"]  # the first batch; the cut one is not recorded
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] is False

    assert main(_eval_args(run, behaviors_file)) == 0  # resumes: same settings
    records = _records(run)
    assert records[:2] == kept and sorted(r["behavior_id"] for r in records) == ["b0", "b1", "b2", "b3"]

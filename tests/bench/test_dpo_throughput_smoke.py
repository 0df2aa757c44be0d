"""bench/dpo_throughput.py on a tiny random model, one step per system: the table's shape and a
correctness guard (both systems train on the same ids and start from the same loss). No timing."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("psutil")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import dpo_throughput as bench  # noqa: E402

SYSTEMS = ("safealign-dpo-cached", "safealign-edpo-cached", "safealign-dpo-live", "trl", "trl-liger",
           "safealign-dpo-cached-packed-grouped", "safealign-dpo-cached-naive", "trl-precompute")


@pytest.fixture(scope="module")
def result():
    cfg = bench.BenchConfig(shape="tiny", device="cpu", prompt_len=12, response_len=8, prefix_len=4, batch=2,
                            ref_batch=2, warmup=0, steps=1, reps=1, systems=SYSTEMS)
    return bench.run_benchmark(cfg)


def test_table_has_one_row_per_system_and_every_column(result):
    table = bench.table_rows(result)
    assert [cells[0] for cells in table] == [bench.SYSTEMS[key][0] for key in SYSTEMS]
    columns = bench.columns(result)  # ratio columns against TRL and TRL-precompute; Liger did not run on CPU
    # on CPU the ratios come from CPU seconds, and the columns say so
    assert columns[-6:] == tuple(f"{name} ÷ {base}" for base in ("TRL", "TRL-precompute")
                                 for name in ("tokens/CPU-s", "peak mem", "epoch CPU-s"))  # fmt: skip
    assert all(len(cells) == len(columns) for cells in table)
    text = bench.format_table(result).splitlines()
    assert text[0] == "| " + " | ".join(columns) + " |" and len(text) == 2 + len(SYSTEMS)
    liger = table[SYSTEMS.index("trl-liger")]
    assert set(liger[1:]) == {"n/a (needs CUDA)"}  # CPU: Liger's Triton kernels cannot run
    trl = table[SYSTEMS.index("trl")]
    n = len(bench.COLUMNS)
    assert trl[n : n + 3] == ["1.00", "1.00", "1.00"]  # TRL over itself
    assert table[SYSTEMS.index("trl-precompute")][n + 3 : n + 6] == ["1.00", "1.00", "1.00"]
    packed = table[SYSTEMS.index("safealign-dpo-cached-packed-grouped")]
    plain = table[SYSTEMS.index("safealign-dpo-cached")]
    assert float(packed[columns.index("padding %")]) < float(plain[columns.index("padding %")])
    assert plain[columns.index("ref pass % of epoch")] != "–" and trl[columns.index("ref pass % of epoch")] == "–"
    for row in result.rows[:3]:
        assert row.median("tokens_per_s") > 0 and row.median("epoch_cpu_s") > 0 and len(row.runs) == 1


def test_safealign_and_trl_start_from_the_same_loss_on_the_same_ids(result):
    by_key = {row.key: row for row in result.rows}
    trl = by_key["trl"]
    for key in ("safealign-dpo-cached", "safealign-dpo-live", "safealign-dpo-cached-naive"):
        ours = by_key[key]
        # DPO starts at the reference: log 2 for both
        assert ours.median("first_loss") == pytest.approx(trl.median("first_loss"), abs=1e-4)
        assert ours.median("first_loss") == pytest.approx(math.log(2), abs=1e-4)
        # the policy's summed chosen log-probs of the first batch: equal only if the ids and batches are
        assert ours.median("first_chosen_logps") == pytest.approx(trl.median("first_chosen_logps"), rel=1e-5)
    notes = bench.sanity_notes(result)
    assert any(n.startswith("safealign-dpo-cached vs trl") and n.endswith("same") for n in notes)


def test_e_dpo_moves_the_first_loss_through_its_reference_view(result):
    by_key = {row.key: row for row in result.rows}
    # the prefixed reference view on the harmful half shifts the first-step margin away from zero
    assert by_key["safealign-edpo-cached"].median("first_loss") != pytest.approx(math.log(2), abs=1e-6)
    assert by_key["safealign-edpo-cached"].median("first_chosen_logps") == pytest.approx(
        by_key["safealign-dpo-cached"].median("first_chosen_logps"), rel=1e-5)  # same policy, same ids


def test_cli_arguments_map_to_the_config(monkeypatch):
    monkeypatch.setattr(bench.torch.cuda, "is_available", lambda: True)  # --device cuda is refused without CUDA
    cfg = bench.parse_args(["--device", "cuda", "--shape", "8b", "--lora", "--seq", "2048", "--batch", "2",
                            "--gradient-checkpointing", "--systems", "safealign-dpo-cached,trl"])
    assert (cfg.prompt_len, cfg.response_len, cfg.batch, cfg.ref_batch) == (512, 1536, 2, 2)
    assert cfg.lora and cfg.gradient_checkpointing and cfg.systems == ("safealign-dpo-cached", "trl")
    with pytest.raises(ValueError, match="unknown systems"):
        bench.run_benchmark(bench.BenchConfig(systems=("nope",)))


def test_one_untimed_warm_up_run_per_runner_kind_comes_before_the_timed_runs(monkeypatch):
    calls = []

    def fake_run(cfg, key, make_model, tokenizer, pairs):
        calls.append((key, cfg.steps, cfg.warmup, len(pairs)))
        return bench.Measurement(first_loss=0.69, first_chosen_logps=-1.0, tokens_per_s=1.0, peak_bytes=1,
                                 epoch_s=1.0, tokens_per_cpu_s=1.0, epoch_cpu_s=1.0)

    monkeypatch.setattr(bench, "run_system", fake_run)
    systems = ("safealign-dpo-cached", "safealign-dpo-live", "trl", "trl-precompute")
    cfg = bench.BenchConfig(shape="tiny", device="cpu", batch=2, warmup=1, steps=3, reps=2, systems=systems)
    result = bench.run_benchmark(cfg)
    warm, timed = calls[:2], calls[2:]
    assert warm == [("safealign-dpo-cached", 1, 0, 2), ("trl", 1, 0, 2)]  # one short run per kind, one batch
    assert [c[0] for c in timed] == list(systems) + list(systems[::-1])  # then the interleaved timed reps
    assert all(c[1:] == (3, 1, 8) for c in timed)
    assert all(len(row.runs) == 2 for row in result.rows)  # warm-up runs are not recorded
    calls.clear()
    bench.run_benchmark(bench.BenchConfig(shape="tiny", batch=2, reps=1, systems=systems, warm_up_run=False))
    assert [c[0] for c in calls] == list(systems)
    assert bench.warm_up_kind("trl-liger") == "trl+liger" and bench.warm_up_kind("safealign-edpo-live") == "safealign"
    assert not bench.parse_args(["--no-warm-up-run"]).warm_up_run and bench.parse_args([]).warm_up_run

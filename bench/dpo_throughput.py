"""Benchmark: safealign DPO / E-DPO training vs TRL 1.16 ``DPOTrainer`` (and TRL + Liger) in one run.

Same device, same random-init Llama-shaped model (fresh, same seed, per run), same synthetic pairs
(random token ids; TRL is handed the exact ids, see ``_trl_setup.py``), same optimizer settings and
batch order. Per system: training-step throughput (non-padding policy tokens per second over the
steps after warm-up), peak memory, and wall time of one epoch over all pairs including the reference
pass, with ratios to TRL and to TRL + Liger. Systems run interleaved (A B C .. C B A ..) and the
table shows medians, so load drift hits all of them alike. The first-step loss and mean chosen
log-prob are printed as a sanity column: equal values mean both systems scored the same ids.

  python bench/dpo_throughput.py --device cuda --shape 1.5b            # H100/H200, bf16
  python bench/dpo_throughput.py --device cuda --shape 8b --lora --seq 2048 --batch 2 --gradient-checkpointing
  python bench/dpo_throughput.py --device cpu --shape smollm2 --threads 1 --prompt-len 64 --response-len 64
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measurement  # noqa: E402
from _safealign_setup import run_safealign  # noqa: E402
from _trl_setup import liger_status, run_trl  # noqa: E402

# Llama configs; "1.5b"/"3.6b" are Llama-3.2-1B/3B with untied embeddings (the shapes), "8b" is Llama-3-8B.
SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=False),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0),
    "1.5b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                 num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
    "3.6b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                 num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0),
}
# key -> (label, runner kind, options)
SYSTEMS = {
    "safealign-dpo-cached": ("safealign DPO, cached reference", "safealign", dict(reference="cache", e_view=False)),
    "safealign-edpo-cached": ("safealign E-DPO, cached reference", "safealign", dict(reference="cache", e_view=True)),
    "safealign-dpo-live": ("safealign DPO, live reference", "safealign", dict(reference="live", e_view=False)),
    "safealign-edpo-live": ("safealign E-DPO, live reference", "safealign", dict(reference="live", e_view=True)),
    "safealign-dpo-cached-grouped": ("safealign DPO, cached, length-grouped (prototype)", "safealign",
                                     dict(reference="cache", e_view=False, group_by_length=True)),
    "trl": ("TRL DPO, live reference", "trl", dict(precompute=False, liger=False)),
    "trl-precompute": ("TRL DPO, precompute_ref_log_probs", "trl", dict(precompute=True, liger=False)),
    "trl-liger": ("TRL + Liger DPO, live reference", "trl", dict(precompute=False, liger=True)),
    "trl-liger-precompute": ("TRL + Liger DPO, precompute_ref_log_probs", "trl", dict(precompute=True, liger=True)),
}
DEFAULT_SYSTEMS = ("safealign-dpo-cached", "safealign-edpo-cached", "safealign-dpo-live", "trl", "trl-precompute",
                   "trl-liger")
SAME_IDS = {"safealign-dpo-cached", "safealign-dpo-live", "trl", "trl-precompute", "trl-liger", "trl-liger-precompute"}


@dataclass
class BenchConfig:
    shape: str = "tiny"
    model: str | None = None  # a safealign model spec (e.g. smollm2-135m-instruct) instead of a random shape
    device: str = "cpu"
    prompt_len: int = 64
    response_len: int = 64
    jitter: float = 0.25  # lengths uniform in [(1 - jitter) * len, len]
    prefix_len: int = 24  # E-DPO: reference-view prefix on the harmful half of the rows
    batch: int = 4  # pairs per step
    ref_batch: int = 4  # pairs per reference-pass batch (both systems)
    warmup: int = 1
    steps: int = 3  # timed steps after warm-up; one epoch = (warmup + steps) * batch pairs
    reps: int = 1
    lora: bool = False
    lora_r: int = 16
    gradient_checkpointing: bool = False
    lr: float = 1e-5
    beta: float = 0.1
    seed: int = 0
    systems: tuple[str, ...] = DEFAULT_SYSTEMS

    @property
    def pairs(self) -> int:
        return (self.warmup + self.steps) * self.batch


@dataclass
class BenchResult:
    rows: list["Row"]
    mean_pair_tokens: float  # prompt + chosen + rejected
    cpu_time: bool  # ratios from process CPU time (CPU device: the machine may be shared) instead of wall time


@dataclass
class Row:
    key: str
    label: str
    runs: list[Measurement] = field(default_factory=list)
    skipped: str | None = None

    def median(self, name: str) -> float:
        return statistics.median(getattr(m, name) for m in self.runs)


# --------------------------------------------------------------------------- data and model
def make_pairs(cfg: BenchConfig, vocab: int) -> list:
    """Random-id pairs; even rows are "harmful" and get a reference-view prefix (used by E-DPO only)."""
    from safealign.data.tokenize import EncodedPair

    rng = random.Random(cfg.seed)
    ids = lambda n: tuple(rng.randrange(3, vocab) for _ in range(n))  # noqa: E731
    length = lambda n: rng.randint(max(1, math.ceil((1 - cfg.jitter) * n)), n)  # noqa: E731
    prefix = ids(cfg.prefix_len)
    pairs = []
    for i in range(cfg.pairs):
        prompt = ids(length(cfg.prompt_len))
        harmful = i % 2 == 0
        pairs.append(EncodedPair(index=i, prompt_ids=prompt, ref_prompt_ids=prefix + prompt if harmful else None,
                                 chosen_ids=ids(length(cfg.response_len)), rejected_ids=ids(length(cfg.response_len)),
                                 harmful=harmful))
    return pairs


def model_factory(cfg: BenchConfig):
    """``(make_model, tokenizer, vocab)``; ``make_model()`` builds the same fresh weights on every call."""
    device = torch.device(cfg.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if cfg.model:
        from safealign.models import load_model
        from safealign.models.load import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
        make = lambda: load_model(cfg.model, device=cfg.device, dtype=dtype, for_training=True)[0]  # noqa: E731
        return make, tokenizer, len(tokenizer)
    from transformers import AutoModelForCausalLM, LlamaConfig

    from safealign.models.tiny import tiny_tokenizer

    config = LlamaConfig(max_position_embeddings=8192, attention_dropout=0.0, pad_token_id=0, **SHAPES[cfg.shape])

    def make():
        torch.manual_seed(cfg.seed)
        with device:  # a fresh config each time: trainers write to it (TRL sets pad_token_id)
            model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype)
        return model.train()

    return make, tiny_tokenizer(), config.vocab_size


# --------------------------------------------------------------------------- running
def run_system(cfg: BenchConfig, key: str, make_model, tokenizer, pairs) -> Measurement:
    _, kind, options = SYSTEMS[key]
    if kind == "safealign":
        return run_safealign(cfg, make_model, tokenizer, pairs, **options)
    return run_trl(cfg, make_model, tokenizer, pairs, **options)


def run_benchmark(cfg: BenchConfig) -> BenchResult:
    """All systems, ``reps`` times, in alternating order (forward, reversed, forward, ...)."""
    unknown = [key for key in cfg.systems if key not in SYSTEMS]
    if unknown:
        raise ValueError(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    make_model, tokenizer, vocab = model_factory(cfg)
    pairs = make_pairs(cfg, vocab)
    rows = [Row(key, SYSTEMS[key][0]) for key in cfg.systems]
    for row in rows:
        if SYSTEMS[row.key][2].get("liger"):
            row.skipped = liger_status(torch.device(cfg.device))
    runnable = [row for row in rows if row.skipped is None]
    for rep in range(cfg.reps):
        for row in runnable if rep % 2 == 0 else runnable[::-1]:
            started = time.perf_counter()
            row.runs.append(run_system(cfg, row.key, make_model, tokenizer, pairs))
            logging.getLogger(__name__).info("rep %d %s: %.1f s", rep, row.key, time.perf_counter() - started)
    mean_tokens = statistics.mean(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return BenchResult(rows, mean_tokens, cpu_time=cfg.device == "cpu")


# --------------------------------------------------------------------------- table
COLUMNS = ("system", "first loss", "first logps/chosen", "tokens/s", "tokens/CPU-s", "peak mem GiB", "epoch s",
           "epoch CPU-s", "tokens/s ÷ TRL", "peak mem ÷ TRL", "epoch ÷ TRL",
           "tokens/s ÷ TRL+Liger", "peak mem ÷ TRL+Liger", "epoch ÷ TRL+Liger")


def _ratios(row: Row, base: Row | None, cpu_time: bool) -> list[str]:
    if base is None or base.skipped or not base.runs:
        why = base.skipped if base is not None and base.skipped else "n/a (not run)"
        return [why] * 3
    names = ("tokens_per_cpu_s", "peak_bytes", "epoch_cpu_s") if cpu_time else ("tokens_per_s", "peak_bytes", "epoch_s")
    return [f"{row.median(name) / base.median(name):.2f}" for name in names]


def table_rows(result: BenchResult) -> list[list[str]]:
    by_key = {row.key: row for row in result.rows}
    out = []
    for row in result.rows:
        if row.skipped:
            out.append([row.label] + [row.skipped] * (len(COLUMNS) - 1))
            continue
        m = row.median
        out.append([row.label, f"{m('first_loss'):.4f}", f"{m('first_chosen_logps'):.3f}", f"{m('tokens_per_s'):,.0f}",
                    f"{m('tokens_per_cpu_s'):,.0f}", f"{m('peak_bytes') / 2**30:.2f}", f"{m('epoch_s'):.1f}",
                    f"{m('epoch_cpu_s'):.1f}"]
                   + _ratios(row, by_key.get("trl"), result.cpu_time)
                   + _ratios(row, by_key.get("trl-liger"), result.cpu_time))
    return out


def format_table(result: BenchResult) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(result)]
    return "\n".join(lines)


def sanity_notes(result: BenchResult, tol: float = 1e-4) -> list[str]:
    """First-step agreement of every same-ids system with TRL, and the E-DPO / DPO cost ratios."""
    by_key = {row.key: row for row in result.rows if row.runs}
    notes = []
    if "trl" in by_key:
        trl = by_key["trl"]
        for key in sorted(SAME_IDS & set(by_key) - {"trl"}):
            loss_diff = abs(by_key[key].median("first_loss") - trl.median("first_loss"))
            lp = trl.median("first_chosen_logps")
            lp_rel = abs(by_key[key].median("first_chosen_logps") - lp) / max(abs(lp), 1e-12)
            verdict = "same" if loss_diff <= tol and lp_rel <= tol else "DIFFERENT"
            notes.append(
                f"{key} vs trl first step: |Δloss| {loss_diff:.1e}, rel. Δlogps/chosen {lp_rel:.1e} -> {verdict}"
            )
    if "safealign-dpo-cached" in by_key and "safealign-edpo-cached" in by_key:
        dpo, edpo = by_key["safealign-dpo-cached"], by_key["safealign-edpo-cached"]
        rate, epoch = ("tokens_per_cpu_s", "epoch_cpu_s") if result.cpu_time else ("tokens_per_s", "epoch_s")
        notes.append(f"E-DPO / DPO (cached, {'CPU' if result.cpu_time else 'wall'} time): step "
                     f"{dpo.median(rate) / edpo.median(rate):.3f}x, epoch incl. reference pass "
                     f"{edpo.median(epoch) / dpo.median(epoch):.3f}x")
    return notes


def describe(cfg: BenchConfig, pairs_tokens: float) -> str:
    import transformers
    import trl

    memory = ("torch.cuda.max_memory_allocated; ratios from wall time" if cfg.device == "cuda" else
              "peak RSS above the run's start (psutil, every 10 ms); ratios from process CPU time")
    what = cfg.model or f"random-init {cfg.shape} Llama shape"
    return (f"{what}, {'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'full fine-tuning'}, device {cfg.device}, "
            f"{'bf16' if cfg.device == 'cuda' else 'fp32'}, {cfg.batch} pairs/step, {cfg.pairs} pairs/epoch "
            f"({cfg.warmup} warm-up + {cfg.steps} timed steps), mean {pairs_tokens:.0f} tokens/pair "
            f"(prompt + chosen + rejected), {cfg.reps} rep(s), medians; memory: {memory}; "
            f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
            f"threads {torch.get_num_threads()}")


# --------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> BenchConfig:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--model", help="a safealign model spec to load instead of a random shape")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--prompt-len", type=int)
    p.add_argument("--response-len", type=int)
    p.add_argument("--seq", type=int, help="max prompt + response length: prompt seq/4, response 3*seq/4")
    p.add_argument("--jitter", type=float, default=0.25)
    p.add_argument("--prefix-len", type=int, default=24)
    p.add_argument("--batch", type=int)
    p.add_argument("--ref-batch", type=int)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--lora", action="store_true")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help=f"comma list from: {', '.join(SYSTEMS)}")
    p.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    prompt, response = (a.seq // 4, a.seq - a.seq // 4) if a.seq else (460, 460) if cuda else (64, 64)
    batch = a.batch or (8 if cuda else 4)
    if a.threads:
        torch.set_num_threads(a.threads)
    return BenchConfig(
        shape=a.shape, model=a.model, device=a.device, prompt_len=a.prompt_len or prompt,
        response_len=a.response_len or response, jitter=a.jitter, prefix_len=a.prefix_len, batch=batch,
        ref_batch=a.ref_batch or batch, warmup=a.warmup if a.warmup is not None else (3 if cuda else 1),
        steps=a.steps if a.steps is not None else (10 if cuda else 3), reps=a.reps, lora=a.lora, lora_r=a.lora_r,
        gradient_checkpointing=a.gradient_checkpointing, lr=a.lr, seed=a.seed,
        systems=tuple(s.strip() for s in a.systems.split(",") if s.strip()))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("transformers", "trl", "datasets", "accelerate", "safealign"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = parse_args(argv)
    started = time.perf_counter()
    result = run_benchmark(cfg)
    print(describe(cfg, result.mean_pair_tokens))
    print()
    print(format_table(result))
    print()
    for note in sanity_notes(result):
        print("-", note)
    print(f"- total wall time {time.perf_counter() - started:.0f} s; command: python bench/dpo_throughput.py "
          + " ".join(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()

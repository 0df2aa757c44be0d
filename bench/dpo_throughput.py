"""Benchmark: safealign DPO / E-DPO training vs TRL 1.16 ``DPOTrainer`` (and TRL + Liger) in one run.

Same device, same random-init Llama-shaped model (fresh, same seed, per run), same synthetic pairs
(random token ids; TRL is handed the exact ids, see ``_trl_setup.py``), same optimizer settings and
batch order. Per system: training-step throughput (non-padding policy tokens per second over the
steps after warm-up), peak memory, and wall time of one epoch over all pairs including the reference
pass, with ratios to TRL and to TRL + Liger. Before the first timed run, one untimed one-step run per
runner kind (safealign, TRL, TRL + Liger) pays the process's one-time costs (CUDA context and library
handles, kernel compilation, lazy imports), so they do not land in the epoch time of whichever system runs
first. Systems run interleaved (A B C .. C B A ..) and the table shows medians, so load drift hits all of
them alike. The first-step loss and mean chosen
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
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measurement, release_memory  # noqa: E402
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
# key -> (label, runner kind, options); safealign rows use the recipe's speed options (docs/performance.md)
_PG = dict(packing=True, group_by_length=True)
SYSTEMS = {
    "safealign-dpo-cached": ("safealign DPO, cached ref, fused log-probs (default)", "safealign",
                             dict(reference="cache", e_view=False)),
    "safealign-dpo-cached-naive": ("safealign DPO, cached ref, naive log-probs", "safealign",
                                   dict(reference="cache", e_view=False, logps="naive")),
    "safealign-dpo-cached-packed": ("safealign DPO, cached ref, fused, padding-free", "safealign",
                                    dict(reference="cache", e_view=False, packing=True)),
    "safealign-dpo-cached-grouped": ("safealign DPO, cached ref, fused, length-grouped", "safealign",
                                     dict(reference="cache", e_view=False, group_by_length=True)),
    "safealign-dpo-cached-packed-grouped": ("safealign DPO, cached ref, fused, padding-free + length-grouped",
                                            "safealign", dict(reference="cache", e_view=False, **_PG)),
    "safealign-dpo-cached-naive-packed-grouped": ("safealign DPO, cached ref, naive, padding-free + length-grouped",
                                                  "safealign", dict(reference="cache", e_view=False, logps="naive",
                                                                    **_PG)),
    "safealign-edpo-cached": ("safealign E-DPO, cached ref, fused (default)", "safealign",
                              dict(reference="cache", e_view=True)),
    "safealign-edpo-cached-packed-grouped": ("safealign E-DPO, cached ref, fused, padding-free + length-grouped",
                                             "safealign", dict(reference="cache", e_view=True, **_PG)),
    "safealign-dpo-live": ("safealign DPO, live reference, fused", "safealign", dict(reference="live", e_view=False)),
    "safealign-dpo-live-naive": ("safealign DPO, live reference, naive", "safealign",
                                 dict(reference="live", e_view=False, logps="naive")),
    "safealign-edpo-live": ("safealign E-DPO, live reference, fused", "safealign", dict(reference="live", e_view=True)),
    "trl": ("TRL DPO, live reference", "trl", dict(precompute=False, liger=False)),
    "trl-precompute": ("TRL DPO, precompute_ref_log_probs", "trl", dict(precompute=True, liger=False)),
    "trl-liger": ("TRL + Liger DPO, live reference", "trl", dict(precompute=False, liger=True)),
    "trl-liger-precompute": ("TRL + Liger DPO, precompute_ref_log_probs", "trl", dict(precompute=True, liger=True)),
}
DEFAULT_SYSTEMS = ("safealign-dpo-cached", "safealign-edpo-cached", "safealign-dpo-live", "trl", "trl-precompute",
                   "trl-liger")
# every option against both TRL baselines: the CPU table of bench/README.md
ALL_OPTIONS = ("safealign-dpo-cached", "safealign-dpo-cached-naive", "safealign-dpo-cached-packed",
               "safealign-dpo-cached-grouped", "safealign-dpo-cached-packed-grouped",
               "safealign-dpo-cached-naive-packed-grouped", "safealign-edpo-cached",
               "safealign-edpo-cached-packed-grouped", "safealign-dpo-live", "safealign-dpo-live-naive", "trl",
               "trl-precompute", "trl-liger", "trl-liger-precompute")
# the same batches as TRL (no length grouping, which reorders them): the first step must agree with TRL's
SAME_IDS = {"safealign-dpo-cached", "safealign-dpo-cached-naive", "safealign-dpo-cached-packed",
            "safealign-dpo-live", "safealign-dpo-live-naive", "trl", "trl-precompute", "trl-liger",
            "trl-liger-precompute"}
# ratio columns: each option against each of these that ran
BASELINES = {"trl": "TRL", "trl-precompute": "TRL-precompute", "trl-liger": "TRL+Liger",
             "trl-liger-precompute": "TRL+Liger-precompute"}
TRL_VERSION = "1.16.0"  # the TRL the comparison is pinned to (pyproject's test extra; _trl_setup uses its internals)


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
    warm_up_run: bool = True  # one untimed one-step run per runner kind before rep 0
    lora: bool = False
    lora_r: int = 16
    gradient_checkpointing: bool = False
    lr: float = 1e-5
    beta: float = 0.1
    seed: int = 0
    optimizer: str = "adamw"  # safealign.train.config.OPTIMIZERS: the 8-bit ones need bitsandbytes (both systems)
    attn: str = "sdpa"  # attn_implementation of the model (both systems); flash_attention_2 on CUDA if installed
    systems: tuple[str, ...] = DEFAULT_SYSTEMS
    baselines: tuple[str, ...] | None = None  # ratio column groups; None: every BASELINES key among the systems

    @property
    def pairs(self) -> int:
        return (self.warmup + self.steps) * self.batch


@dataclass
class BenchResult:
    rows: list["Row"]
    mean_pair_tokens: float  # prompt + chosen + rejected
    cpu_time: bool  # ratios from process CPU time (CPU device: the machine may be shared) instead of wall time
    baselines: tuple[str, ...] | None = None  # keys of the ratio column groups; None: the baselines that ran


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

    config = LlamaConfig(max_position_embeddings=8192, attention_dropout=0.0, pad_token_id=0,
                         attn_implementation=cfg.attn, **SHAPES[cfg.shape])

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


def warm_up_kind(key: str) -> str:
    """The runner a system goes through, for the untimed warm-up: safealign, TRL, or TRL + Liger (its own
    Triton kernels compile on first use)."""
    _, kind, options = SYSTEMS[key]
    return f"{kind}+liger" if options.get("liger") else kind


def warm_up(cfg: BenchConfig, rows: list["Row"], make_model, tokenizer, pairs) -> list[str]:
    """One untimed one-step run (one batch of pairs) of the first system of each runner kind, so that one-time
    costs of the process are paid before anything is timed; returns the keys it ran. A failure here is only
    logged: the timed run of that system fails the same way and its row says why."""
    short = replace(cfg, warmup=0, steps=1)
    ran: dict[str, str] = {}
    for row in rows:
        kind = warm_up_kind(row.key)
        if kind in ran:
            continue
        ran[kind] = row.key
        try:
            run_system(short, row.key, make_model, tokenizer, pairs[: short.pairs])
        except Exception:  # noqa: BLE001
            logging.getLogger(__name__).warning("untimed warm-up with %s failed", row.key, exc_info=True)
        release_memory(torch.device(cfg.device))
    return list(ran.values())


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
    log = logging.getLogger(__name__)
    if cfg.warm_up_run:
        started = time.perf_counter()
        try:
            keys = warm_up(cfg, runnable, make_model, tokenizer, pairs)
        except KeyboardInterrupt:  # a stage's time limit: nothing was timed yet
            log.warning("interrupted during the untimed warm-up; no system was timed")
            for row in runnable:
                row.skipped = "n/a (time limit)"
            return _result(cfg, rows, pairs)
        log.info("untimed warm-up (%s): %.1f s", ", ".join(keys), time.perf_counter() - started)
    for rep in range(cfg.reps):
        for row in runnable if rep % 2 == 0 else runnable[::-1]:
            if row.skipped:
                continue
            started = time.perf_counter()
            try:
                row.runs.append(run_system(cfg, row.key, make_model, tokenizer, pairs))
            except KeyboardInterrupt:  # a stage's time limit (gpu_suite.sh sends SIGINT): keep what ran
                log.warning("interrupted during %s; the table shows the systems that finished", row.key)
                for other in rows:
                    if not other.runs and not other.skipped:
                        other.skipped = "n/a (time limit)"
                return _result(cfg, rows, pairs)
            except Exception as exc:  # noqa: BLE001  one failing system (out of memory, a missing package)
                # must not cost the rest of a one-call GPU suite: its row says why
                row.skipped = "OOM" if "out of memory" in str(exc).lower() else f"failed: {type(exc).__name__}"
                row.runs.clear()
                log.exception("rep %d %s failed", rep, row.key)
                release_memory(torch.device(cfg.device))
                continue
            m = row.runs[-1]
            log.info("rep %d %s: %.1f s; %.0f tokens/s, %.0f tokens/CPU-s, peak %.2f GiB, epoch %.1f s", rep, row.key,
                     time.perf_counter() - started, m.tokens_per_s, m.tokens_per_cpu_s, m.peak_bytes / 2**30, m.epoch_s)
    return _result(cfg, rows, pairs)


def _result(cfg: BenchConfig, rows: list[Row], pairs: list) -> BenchResult:
    mean_tokens = statistics.mean(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    return BenchResult(rows, mean_tokens, cpu_time=cfg.device == "cpu", baselines=cfg.baselines)


# --------------------------------------------------------------------------- table
COLUMNS = ("system", "first loss", "first logps/chosen", "tokens/s", "tokens/CPU-s", "peak mem GiB", "epoch s",
           "epoch CPU-s", "padding %", "ref pass % of epoch")
RATIOS = ("tokens/s", "peak mem", "epoch")
CPU_RATIOS = ("tokens/CPU-s", "peak mem", "epoch CPU-s")  # on CPU the ratios come from process CPU time


def baselines(result: BenchResult) -> list[str]:
    """Ratio column groups: the configured baselines (fixed columns, so tables of several runs line up), else
    those of :data:`BASELINES` that ran (on CPU, Liger does not)."""
    if result.baselines is not None:
        return list(result.baselines)
    ran = {row.key for row in result.rows if row.runs and not row.skipped}
    return [key for key in BASELINES if key in ran]


def columns(result: BenchResult) -> tuple[str, ...]:
    """The table's columns; the ratio columns name the clock they divide (CPU seconds on CPU, as ``_ratios``)."""
    ratios = CPU_RATIOS if result.cpu_time else RATIOS
    return COLUMNS + tuple(f"{name} ÷ {BASELINES[key]}" for key in baselines(result) for name in ratios)


def _ratios(row: Row, base: Row | None, cpu_time: bool) -> list[str]:
    if base is None or base.skipped or not base.runs:
        return [base.skipped if base is not None and base.skipped else "n/a (not run)"] * 3
    names = ("tokens_per_cpu_s", "peak_bytes", "epoch_cpu_s") if cpu_time else ("tokens_per_s", "peak_bytes", "epoch_s")
    return [f"{row.median(name) / base.median(name):.2f}" for name in names]


def _reference_share(row: Row) -> str:
    shares = [m.reference_s / m.epoch_s for m in row.runs if m.reference_s is not None and m.epoch_s > 0]
    return f"{100 * statistics.median(shares):.0f}" if shares else "–"


def table_rows(result: BenchResult) -> list[list[str]]:
    by_key = {row.key: row for row in result.rows}
    bases = [by_key.get(key) for key in baselines(result)]
    width = len(columns(result))
    out = []
    for row in result.rows:
        if row.skipped or not row.runs:
            out.append([row.label] + [row.skipped or "n/a (not run)"] * (width - 1))
            continue
        m = row.median
        cells = [row.label, f"{m('first_loss'):.4f}", f"{m('first_chosen_logps'):.3f}", f"{m('tokens_per_s'):,.0f}",
                 f"{m('tokens_per_cpu_s'):,.0f}", f"{m('peak_bytes') / 2**30:.2f}", f"{m('epoch_s'):.1f}",
                 f"{m('epoch_cpu_s'):.1f}", f"{100 * m('padding_share'):.0f}", _reference_share(row)]
        for base in bases:
            cells += _ratios(row, base, result.cpu_time)
        out.append(cells)
    return out


def format_table(result: BenchResult) -> str:
    cols = columns(result)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
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
    rate, epoch = ("tokens_per_cpu_s", "epoch_cpu_s") if result.cpu_time else ("tokens_per_s", "epoch_s")
    for dpo_key, edpo_key in (("safealign-dpo-cached", "safealign-edpo-cached"),
                              ("safealign-dpo-cached-packed-grouped", "safealign-edpo-cached-packed-grouped")):
        if dpo_key in by_key and edpo_key in by_key:
            dpo, edpo = by_key[dpo_key], by_key[edpo_key]
            notes.append(f"E-DPO / DPO ({dpo_key.removeprefix('safealign-dpo-')}, "
                         f"{'CPU' if result.cpu_time else 'wall'} time): step "
                         f"{dpo.median(rate) / edpo.median(rate):.3f}x, epoch incl. reference pass "
                         f"{edpo.median(epoch) / dpo.median(epoch):.3f}x")
    return notes


def _trl_version() -> str:
    try:
        import trl
    except ImportError:
        return "not installed"
    return trl.__version__


def describe(cfg: BenchConfig, pairs_tokens: float) -> str:
    import transformers

    memory = ("torch.cuda.max_memory_allocated; ratios from wall time" if cfg.device == "cuda" else
              "peak RSS above the run's start (psutil, every 10 ms); ratios from process CPU time")
    what = cfg.model or f"random-init {cfg.shape} Llama shape"
    return (f"{what}, {'LoRA r=' + str(cfg.lora_r) if cfg.lora else 'full fine-tuning'}, device {cfg.device}, "
            f"optimizer {cfg.optimizer}, attention {cfg.attn}, "
            f"{'activation checkpointing, ' if cfg.gradient_checkpointing else ''}"
            f"lengths uniform in [{1 - cfg.jitter:.2f}, 1] x (prompt {cfg.prompt_len}, response {cfg.response_len}), "
            f"{'bf16' if cfg.device == 'cuda' else 'fp32'}, {cfg.batch} pairs/step, {cfg.pairs} pairs/epoch "
            f"({cfg.warmup} warm-up + {cfg.steps} timed steps"
            f"{'; one untimed one-step run per runner kind first' if cfg.warm_up_run else ''}), "
            f"mean {pairs_tokens:.0f} tokens/pair "
            f"(prompt + chosen + rejected), {cfg.reps} rep(s), medians; memory: {memory}; "
            f"torch {torch.__version__}, transformers {transformers.__version__}, trl {_trl_version()}, "
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
    p.add_argument("--no-warm-up-run", action="store_true",
                   help="skip the untimed one-step run per runner kind before the first timed run")
    p.add_argument("--lora", action="store_true")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                   help=f"comma list from: {', '.join(SYSTEMS)}; or 'all' for every option and baseline")
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "adamw_8bit", "paged_adamw_8bit",
                                                            "paged_adamw_32bit"))
    p.add_argument("--attn", default="sdpa", help="attn_implementation, e.g. sdpa or flash_attention_2")
    p.add_argument("--baselines", help=f"comma list of ratio columns from: {', '.join(BASELINES)} (default: those run)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():  # else every row would fail the same way, one after the other
        p.error("--device cuda: no CUDA (torch.cuda.is_available() is False here)")
    chosen = tuple(b.strip() for b in a.baselines.split(",") if b.strip()) if a.baselines else None
    unknown = [b for b in chosen or () if b not in BASELINES]
    if unknown:  # else every system runs and the table then fails on the unknown column
        p.error(f"--baselines: unknown {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
    prompt, response = (a.seq // 4, a.seq - a.seq // 4) if a.seq else (460, 460) if cuda else (64, 64)
    batch = a.batch or (8 if cuda else 4)
    if a.threads:
        torch.set_num_threads(a.threads)
    return BenchConfig(
        shape=a.shape, model=a.model, device=a.device, prompt_len=a.prompt_len or prompt,
        response_len=a.response_len or response, jitter=a.jitter, prefix_len=a.prefix_len, batch=batch,
        ref_batch=a.ref_batch or batch, warmup=a.warmup if a.warmup is not None else (3 if cuda else 1),
        steps=a.steps if a.steps is not None else (10 if cuda else 3), reps=a.reps,
        warm_up_run=not a.no_warm_up_run, lora=a.lora, lora_r=a.lora_r,
        gradient_checkpointing=a.gradient_checkpointing, lr=a.lr, seed=a.seed, optimizer=a.optimizer, attn=a.attn,
        baselines=chosen,
        systems=ALL_OPTIONS if a.systems == "all" else tuple(s.strip() for s in a.systems.split(",") if s.strip()))


def check_trl(cfg: BenchConfig) -> None:
    """Stop before anything runs when a TRL row is asked for and the pinned TRL cannot be imported (or another
    version is installed): otherwise every safealign row runs first and the baseline rows only fail."""
    wanted = [key for key in cfg.systems if key in SYSTEMS and SYSTEMS[key][1] == "trl"]
    if not wanted:
        return
    need = f"rows {', '.join(wanted)} need trl=={TRL_VERSION}"
    try:
        import trl
    except ImportError as exc:
        raise SystemExit(f"{need}, which cannot be imported ({exc}): pip install trl=={TRL_VERSION}") from None
    if trl.__version__ != TRL_VERSION:
        raise SystemExit(f"{need}, found trl {trl.__version__}: pip install trl=={TRL_VERSION}")


def failed_rows(result: BenchResult) -> list[str]:
    """Rows whose run raised (not OOM, a measured outcome, nor a time limit or a row that cannot run here)."""
    return [row.key for row in result.rows if row.skipped and row.skipped.startswith("failed")]


def main(argv: list[str] | None = None) -> None:
    """Run and print the table; exits non-zero (after printing it) when a row failed, so that a script or
    gpu_suite.sh sees an incomplete comparison."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("transformers", "trl", "datasets", "accelerate", "safealign"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = parse_args(argv)
    check_trl(cfg)
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
    failed = failed_rows(result)
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)} (the log above has each error)")


if __name__ == "__main__":
    main()

"""Benchmark: peak memory of online RLOO (LoRA, live reference = adapter disabled) vs the offline preference
trainer (DPO, LoRA, live reference) on the same model and the same number and length of sequences per step,
and the online step's time split (generate / score / update).

Each system runs in a fresh random-init Llama of the chosen shape (byte-level tiny tokenizer, so a text of n
ASCII characters is n tokens): offline trains on ``batch`` synthetic pairs per step (2·batch sequences of
prompt + response tokens), online samples ``prompts`` × K completions of ``response_len`` tokens per step
(K = 2·batch / prompts, the same sequence count). Peak memory is the allocator peak on CUDA, the RSS peak
above the level at entry on CPU (bench/_measure.py). The issue's bar: online ≤ 1.2 × offline.

  python bench/online_memory.py --shape tiny                      # seconds, a smoke run
  python bench/online_memory.py --shape smollm2 --device cuda     # the embedded model's shape, on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import PeakMemory  # noqa: E402

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3),
}


def make_model(shape: str, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=4096, tie_word_embeddings=False,
                         pad_token_id=tokenizer.pad_token_id, **SHAPES[shape])
    return LlamaForCausalLM(config).to(device), tokenizer


def text(n: int, rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghij ") for _ in range(n))


def offline(args, out: Path) -> int:
    from safealign.config import load_config
    from safealign.train.config import TrainConfig
    from safealign.train.run import run_training

    rng = random.Random(0)
    data = out / "pairs.jsonl"
    rows = [{"prompt": text(args.prompt_len, rng), "chosen": text(args.response_len, rng),
             "rejected": text(args.response_len, rng), "harmful": True} for _ in range(args.batch * args.steps)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(TrainConfig, None, [
        "model=tiny-random", f"output_dir={out / 'offline'}", f"data.path={data}", "data.max_length=4096",
        "data.max_prompt_length=2048", "reference.mode=live", "lora.dropout=0", f"max_steps={args.steps}",
        f"per_device_train_batch_size={args.batch}", "save_steps=100000", "learning_rate=1e-4",
        f"training_args={{use_cpu: {str(args.device == 'cpu').lower()}}}"])
    model, tokenizer = make_model(args.shape, args.device)
    with PeakMemory(torch.device(args.device)) as peak:
        run_training(config, model=model, tokenizer=tokenizer)
    return peak.peak_bytes


def online(args, out: Path, separate_old_forward: bool = False) -> tuple[int, dict[str, float]]:
    """``separate_old_forward``: RLOO's sampling-policy log-probs from their own no-grad forward, as before they
    were taken from the update's forward (bench/online_step.py compares the two)."""
    from safealign.config import load_config
    from safealign.io import read_jsonl
    from safealign.online.config import OnlineConfig
    from safealign.online.run import run_online

    k = max(2, 2 * args.batch // args.prompts)
    prompts = out / "prompts.jsonl"
    rng = random.Random(1)
    prompts.write_text("".join(json.dumps({"prompt": text(args.prompt_len, rng), "harmful": True}) + "\n"
                               for _ in range(args.prompts * args.steps)))
    config = load_config(OnlineConfig, None, [
        "model=tiny-random", f"output_dir={out / 'online'}", f"prompts.path={prompts}",
        "prompts.max_prompt_length=2048",
        f"num_generations={k}", f"prompts_per_step={args.prompts}", f"max_steps={args.steps}", "save_steps=100000",
        f"generation.max_new_tokens={args.response_len}", "lora.dropout=0"])
    model, tokenizer = make_model(args.shape, args.device)
    from unittest import mock

    from safealign.online.trainer import OnlineTrainer

    separate = mock.patch.object(OnlineTrainer, "_old_from_update", lambda self: False)
    with separate if separate_old_forward else contextlib.nullcontext(), PeakMemory(torch.device(args.device)) as peak:
        run_online(config, model=model, tokenizer=tokenizer)
    rows = read_jsonl(out / "online" / "metrics.jsonl")[1:] or read_jsonl(out / "online" / "metrics.jsonl")
    keys = ("share/generate", "share/score", "share/update", "time/generate", "time/score", "time/update", "time/step")
    return peak.peak_bytes, {k: sum(r[k] for r in rows) / len(rows) for k in keys}  # the first step is warm-up


def parse_args(description: str, argv: list[str] | None) -> argparse.Namespace:
    """The model shape and the per-step sequence counts (also bench/online_step.py's)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--response-len", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8, help="offline pairs per step (2x sequences)")
    parser.add_argument("--prompts", type=int, default=4, help="online prompts per step (K = 2·batch / prompts)")
    parser.add_argument("--steps", type=int, default=3)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(__doc__.splitlines()[0], argv)
    with tempfile.TemporaryDirectory() as tmp:
        off = offline(args, Path(tmp))
        on, shares = online(args, Path(tmp))
    result = {"offline_peak_mb": off / 2**20, "online_peak_mb": on / 2**20, "ratio": on / max(off, 1), **shares}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

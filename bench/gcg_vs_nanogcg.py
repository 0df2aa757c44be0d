"""Benchmark: safealign's GCG vs nanoGCG (PyPI ``nanogcg``) on the same model, behaviors, steps, width.

Reports, per behavior, the best target loss after N steps and seconds per step for both, and the
ratios ours/nanogcg. Both tools optimise and are scored on identical token ids: nanoGCG gets the request
followed directly by ``{optim_str}`` and, as its initial string, the text of our initial suffix ids (the
separator first, then ``x x …``), so its prompt ids before and after the suffix, its initial suffix ids and
its target ids are ours; the script checks this against nanoGCG's own embedded prompt and stops if they
differ. nanoGCG's best suffix ids (captured from its buffer, not re-tokenized from its string) are re-scored
with our loss, which must match nanoGCG's own loss up to rounding (printed as a check, see ``loss_tolerance``).
The loss ratio compares the two suffixes under our loss (ours / nanoGCG's re-scored), like for like: nanoGCG
computes its loss in the model's dtype (cross-entropy and mean in bf16 on a GPU), ours from fp32 logits.

Timing is like for like: seconds per step cover the optimisation steps only, on both sides (ours: after the
behavior's prompt is prepared; nanoGCG: after its setup, i.e. its vocabulary scan, prompt tokenization and
initial-buffer forward), and each tool first runs one untimed one-step warm-up (which also fills our cached
token mask).

nanogcg is a benchmark-only dependency (never a safealign requirement); on transformers 5 install it
with ``pip install --no-deps nanogcg==0.3.0 scipy`` and it needs ``use_prefix_cache=False``. The script checks
that it imports before loading the model. ``--device`` picks the device (default: CUDA with bf16 when available,
else CPU with fp32, as ``load_model`` does); the table's header names the model's actual device and dtype.
``--data`` (default ``../shared/data``, outside the repository) must hold ``advbench_behaviors.csv`` and
``advbench_targets.json``; the script checks before loading the model.

  python bench/gcg_vs_nanogcg.py --model smollm2-135m-instruct --steps 5 --search-width 64 --topk 64 -n 2
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import statistics
import time
from pathlib import Path

import torch

from safealign.data.behaviors import behavior_prompt, load_behaviors
from safealign.eval.attacks import AttackContext
from safealign.eval.attacks.gcg import GCGAttack, GCGConfig
from safealign.eval.backends.hf import HFChatModel
from safealign.models.load import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NANOGCG_INSTALL = "pip install --no-deps nanogcg==0.3.0 scipy"
DATA_FILES = ("advbench_behaviors.csv", "advbench_targets.json")
# The re-scoring check: |our loss of nanoGCG's suffix - nanoGCG's own loss| <= max(MIN_TOLERANCE, ROUNDING_EPS x the
# model dtype's machine epsilon x |loss|). fp32: 1e-3 (what is left is float rounding between batch shapes).
MIN_TOLERANCE = 1e-3
ROUNDING_EPS = 4  # nanoGCG rounds each token's cross-entropy and their mean to the model dtype (bf16 on a GPU)


def check_nanogcg() -> None:
    """Stop before the model loads when nanogcg (or its scipy) cannot be imported, saying how to install it."""
    try:
        import nanogcg  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"this benchmark needs nanogcg, which cannot be imported ({exc}): {NANOGCG_INSTALL}") from None


def check_data(data: Path) -> None:
    """Stop before the model loads when the AdvBench files are not in ``data`` (the default folder lies outside the
    repository, so a copy of the repository alone, e.g. on a device machine, lacks them)."""
    missing = [name for name in DATA_FILES if not (data / name).is_file()]
    if missing:
        raise SystemExit(f"--data {data}: no {', '.join(missing)} there; pass --data with the folder that holds "
                         f"{' and '.join(DATA_FILES)}")


def loss_tolerance(dtype: torch.dtype, loss: float) -> float:
    """How far nanoGCG's own loss of a suffix may be from ours for the same ids: nanoGCG takes the cross-entropy
    and its mean in the model's dtype, ours upcasts the logits to fp32, so in bf16 (eps 2^-7) the two differ by up
    to about one eps x |loss| (e.g. 5.625 vs 5.615 on tiny-random); a few eps allow that and batch-shape rounding,
    while a different problem or suffix would differ by far more. fp32 keeps the 1e-3 floor."""
    return max(MIN_TOLERANCE, ROUNDING_EPS * torch.finfo(dtype).eps * abs(loss))


def check_rescoring(rows, dtype: torch.dtype) -> None:
    """Print the largest gap between nanoGCG's own loss and our loss of its best suffix (table rows: columns 3
    and 4), and stop naming each behavior whose gap is over :func:`loss_tolerance` for the model's dtype."""
    gaps = [(bid, abs(nano_rescored - nano), loss_tolerance(dtype, max(abs(nano), abs(nano_rescored))))
            for bid, _, _, nano, nano_rescored, _, _ in rows]  # fmt: skip
    print(f"check: nanoGCG optimised our exact prompt ids (before, after, target and initial suffix ids equal for "
          f"all {len(rows)} behaviors); its best suffix ids re-scored by our loss differ from its own loss by at "
          f"most {max(gap for _, gap, _ in gaps):.2e} (allowed: max({MIN_TOLERANCE:g}, {ROUNDING_EPS} x "
          f"{str(dtype).removeprefix('torch.')} eps x |loss|))")  # fmt: skip
    over = [f"{bid} ({gap:.2e} > {tol:.2e})" for bid, gap, tol in gaps if gap > tol]
    if over:
        raise SystemExit(f"check failed: {', '.join(over)}: nanoGCG's best suffix does not score the same under "
                         "our loss")


def run_ours(attack: GCGAttack, behavior) -> tuple[float, list[int], float]:
    """(best loss, best suffix ids, seconds per step); the clock covers the steps only (optimize starts it
    after the behavior's prompt is prepared)."""
    result = attack.optimize(behavior)
    return result.loss, result.suffix_ids, result.seconds / max(1, result.steps)


def warm_up_ours(attack: GCGAttack, behavior) -> None:
    """One untimed step: fills the cached token mask and pays first-call costs before anything is timed."""
    full = attack.config
    attack.config = dataclasses.replace(full, steps=1)
    try:
        attack.optimize(behavior)
    finally:
        attack.config = full


def nanogcg_tokenizer(tokenizer):
    # nanogcg strips every occurrence of bos_token from the chat template; for ChatML models whose bos
    # is <|im_start|> that would break the prompt, so give it a copy without a bos token.
    tok = copy.deepcopy(tokenizer)
    tok.bos_token = None
    return tok


@dataclasses.dataclass
class NanoRun:
    loss: float  # nanoGCG's best loss
    string: str  # nanoGCG's best string
    ids: list[int]  # the suffix ids that reached it
    seconds_per_step: float  # optimisation steps only, after nanoGCG's setup
    before_embeds: torch.Tensor  # nanoGCG's embedded prompt parts, to check they are ours
    after_embeds: torch.Tensor
    target_ids: list[int]
    init_ids: list[int]


def run_nanogcg(model, tok, behavior, optim_str_init: str, steps: int, args) -> NanoRun:
    import nanogcg
    from nanogcg.gcg import GCG

    class Recording(GCG):
        """nanoGCG unchanged, except that it records every suffix it adds to its buffer (with the default
        buffer_size 0, one per step: the ids whose loss is that step's entry in ``losses``) and when its setup
        ends (the initial buffer is built right before the first step)."""

        def init_buffer(self):
            buffer = super().init_buffer()
            self.init_ids = buffer.get_best_ids()[0].tolist()
            self.added: list[list[int]] = []
            add = buffer.add

            def recording_add(loss, optim_ids):
                self.added.append(optim_ids[0].tolist())
                add(loss, optim_ids)

            buffer.add = recording_add
            self.steps_start = time.perf_counter()
            return buffer

    config = nanogcg.GCGConfig(num_steps=steps, search_width=args.search_width, topk=args.topk,
                               optim_str_init=optim_str_init, seed=args.seed, use_prefix_cache=False,
                               verbosity="ERROR")  # fmt: skip
    # The request, then the suffix directly: optim_str_init starts with our separator, as our suffix ids do.
    messages = [{"role": "user", "content": behavior_prompt(behavior) + "{optim_str}"}]
    nanogcg.gcg.logger.setLevel(getattr(logging, config.verbosity))  # as nanogcg.run() does
    gcg = Recording(model, tok, config)
    result = gcg.run(messages, behavior.target)
    seconds = (time.perf_counter() - gcg.steps_start) / steps
    assert len(gcg.added) == len(result.losses), "nanoGCG added a suffix per step (buffer_size 0)"
    best = result.losses.index(min(result.losses))  # the index nanoGCG's run() picks its best string by
    return NanoRun(result.best_loss, result.best_string, gcg.added[best], seconds, gcg.before_embeds.detach(),
                   gcg.after_embeds.detach(), gcg.target_ids[0].tolist(), gcg.init_ids)


def optim_string(attack: GCGAttack, tok, ids: list[int]) -> str:
    """The text whose tokens are exactly ``ids`` (our initial suffix, separator first), for nanoGCG's
    ``optim_str_init``; a decoder that drops a leading separator gets it back."""
    for text in (tok.decode(ids), attack.config.separator + attack._suffix_text(torch.tensor(ids))):
        if tok(text, add_special_tokens=False)["input_ids"] == ids:
            return text
    raise SystemExit(f"no text tokenizes to our initial suffix ids {ids}: nanoGCG cannot start where we start")


def check_same_problem(attack: GCGAttack, behavior, run: NanoRun, init_ids: list[int]) -> None:
    """Stop unless nanoGCG optimised exactly our problem: same ids before and after the suffix (compared as
    embeddings, which is what nanoGCG keeps), same target ids, same initial suffix ids."""
    problem = attack._problem(behavior)
    same = {
        "before": torch.equal(run.before_embeds, problem.before),
        "after": torch.equal(run.after_embeds, problem.after),
        "target": run.target_ids == problem.target_ids.tolist(),
        "initial suffix": run.init_ids == init_ids,
    }
    if not all(same.values()):
        raise SystemExit(f"{behavior.id}: nanoGCG's prompt differs from ours ({same}); the losses would not be "
                         "comparable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--search-width", type=int, default=64)
    parser.add_argument("--topk", type=int, default=64)
    parser.add_argument("--suffix-length", type=int, default=20)
    parser.add_argument("-n", "--behaviors", type=int, default=2, help="first N AdvBench behaviors")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", help="e.g. cpu or cuda (default: CUDA with bf16 when available, else CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    check_nanogcg()
    check_data(args.data)
    model, tokenizer = load_model(args.model, device=args.device)
    behaviors = load_behaviors(args.data / "advbench_behaviors.csv", targets=args.data / "advbench_targets.json")
    config = GCGConfig(steps=args.steps, search_width=args.search_width, topk=args.topk,
                       suffix_length=args.suffix_length, early_stop_every=0, seed=args.seed)  # fmt: skip
    attack = GCGAttack(config, AttackContext(target=HFChatModel(model, tokenizer), model=model, tokenizer=tokenizer))

    init_ids = attack._initial_ids().tolist()
    tok = nanogcg_tokenizer(tokenizer)
    optim_str_init = optim_string(attack, tok, init_ids)
    chosen = behaviors[: args.behaviors]
    warm_up_ours(attack, chosen[0])  # untimed: one step of each tool before any timed run
    run_nanogcg(model, tok, chosen[0], optim_str_init, 1, args)
    rows = []
    for behavior in chosen:
        initial = attack.target_loss(behavior, init_ids)
        ours_loss, ours_ids, ours_s = run_ours(attack, behavior)
        nano = run_nanogcg(model, tok, behavior, optim_str_init, args.steps, args)
        check_same_problem(attack, behavior, nano, init_ids)
        nano_rescored = attack.target_loss(behavior, nano.ids)  # nanoGCG's own best ids, under our loss
        rows.append((behavior.id, initial, ours_loss, nano.loss, nano_rescored, ours_s, nano.seconds_per_step))
    print_table(rows, args, model)
    check_rescoring(rows, next(model.parameters()).dtype)


def print_table(rows, args, model) -> None:
    weights = next(model.parameters())  # where load_model put the model, not what was asked for
    print(f"model={args.model} steps={args.steps} search_width={args.search_width} topk={args.topk} "
          f"suffix_length={args.suffix_length} threads={args.threads} device={weights.device} "
          f"dtype={str(weights.dtype).removeprefix('torch.')}")  # fmt: skip
    # the loss ratio divides by nanoGCG's suffix re-scored with our loss (its own loss is in the model's dtype)
    head = ("| behavior | initial loss | ours loss | nanogcg loss | nanogcg suffix, our loss fn "
            "| loss ratio ours/nano (our loss fn) | ours s/step | nanogcg s/step | time ratio ours/nano |")  # fmt: skip
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for bid, init, ol, nl, nr, os_, ns in rows:
        print(f"| {bid} | {init:.3f} | {ol:.3f} | {nl:.3f} | {nr:.3f} | {ol / nr:.3f} "
              f"| {os_:.2f} | {ns:.2f} | {os_ / ns:.2f} |")
    mean = statistics.fmean
    print(f"| mean | {mean(r[1] for r in rows):.3f} | {mean(r[2] for r in rows):.3f} | {mean(r[3] for r in rows):.3f} "
          f"| {mean(r[4] for r in rows):.3f} | {mean(r[2] / r[4] for r in rows):.3f} | {mean(r[5] for r in rows):.2f} "
          f"| {mean(r[6] for r in rows):.2f} | {mean(r[5] / r[6] for r in rows):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()

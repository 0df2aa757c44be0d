"""In-process gloo groups for DDP tests on CPU. Imported as ``train.ddp_helpers``; the world-2 worker lives here
(not in a test module) so that ``torch.multiprocessing.spawn`` can import it in its child processes."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

STEPS = 2  # the second step's gradients depend on the first step's all-reduced update


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process_group(rank: int = 0, world_size: int = 1, port: int | None = None) -> Iterator[None]:
    """A gloo process group on localhost for the duration of the block."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port or free_port()}", rank=rank,
                            world_size=world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def pair_batch(pairs: list[int]) -> dict[str, torch.Tensor]:
    """The chosen rows, then the rejected rows, of ``pairs`` out of 4 right-padded pairs."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 250, (8, 12), generator=g)
    attention, response = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, (length, answer) in enumerate([(12, 5), (9, 1), (7, 4), (10, 3), (11, 2), (6, 3), (12, 6), (8, 4)]):
        attention[row, :length] = 1
        response[row, length - answer : length] = 1
        ids[row, length:] = 0
    rows = list(pairs) + [4 + p for p in pairs]
    return {"input_ids": ids[rows], "attention_mask": attention[rows], "response_mask": response[rows]}


def dpo_steps(model: torch.nn.Module, scored: torch.nn.Module, pairs: list[int], impl: str
              ) -> tuple[list[float], list[dict[str, torch.Tensor]], int]:
    """``STEPS`` SGD steps of DPO on ``pairs``, scoring through ``scored`` (the model or its DDP wrapper):
    the losses, each step's gradients (all-reduced under DDP) and how often the LM head module ran with
    gradients on (the full-logits path does; the fused path calls ``F.linear`` on the weight instead)."""
    from safealign.losses import LossSpec, build_loss
    from safealign.train.logps import pair_logps
    from safealign.types import PairLogps

    head_calls = []
    model.get_output_embeddings().register_forward_hook(
        lambda *_: head_calls.append(1) if torch.is_grad_enabled() else None)
    loss_fn = build_loss([LossSpec(name="dpo")])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    losses, grads = [], []
    batch = pair_batch(pairs)
    for _ in range(STEPS):
        chosen, rejected, chosen_tokens, rejected_tokens = pair_logps(scored, batch, chunk_size=4, impl=impl)
        loss = loss_fn(PairLogps(chosen=chosen, rejected=rejected, chosen_tokens=chosen_tokens,
                                 rejected_tokens=rejected_tokens, ref_chosen=chosen.detach() - 1.0,
                                 ref_rejected=rejected.detach() + 0.5)).losses.mean()
        optimizer.zero_grad()
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
        optimizer.step()
    return losses, grads, len(head_calls)


def ddp_worker(rank: int, world_size: int, port: int, find_unused: bool, lora: bool, out: str) -> None:
    """One of two processes: DPO steps on its two of the four pairs through DDP, fused and naive (each on a
    fresh copy of the same model); saves the losses, gradients and head calls to ``out/rank<rank>.pt``."""
    torch.set_num_threads(1)
    from safealign.models.lora import LoraSettings, apply_lora
    from safealign.models.tiny import tiny_model

    with process_group(rank, world_size, port):
        results = {}
        for impl in ("fused", "naive"):
            model = tiny_model(vocab_size=250)
            if lora:
                model = apply_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
            wrapped = DistributedDataParallel(model, find_unused_parameters=find_unused)
            results[impl] = dpo_steps(model, wrapped, [2 * rank, 2 * rank + 1], impl)
        torch.save(results, Path(out) / f"rank{rank}.pt")

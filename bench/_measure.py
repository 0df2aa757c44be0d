"""Measurement helpers shared by the DPO throughput benchmark's runners (safealign and TRL).

Every runner is timed and metered the same way, so the two systems differ only in their trainers:
- ``TokenCounter`` wraps a collator and records the non-padding tokens of each training batch;
- ``StepClock`` is a ``TrainerCallback`` stamping the end of each optimizer step;
- ``PeakMemory`` reports peak device memory (CUDA: ``torch.cuda.max_memory_allocated``) or, on CPU,
  the peak resident set size above the level at entry, sampled every few milliseconds by a thread.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import TrainerCallback


@dataclass(frozen=True)
class Measurement:
    """One run of one system: a full epoch, of which the steps after warm-up are timed."""

    first_loss: float
    first_chosen_logps: float  # mean over the first batch: equal across systems iff they scored equal ids
    tokens_per_s: float
    peak_bytes: int
    epoch_s: float  # LoRA wrap or frozen reference copy (when there is one) + trainer construction + reference
    # pass (when there is one) + one epoch; the same phases on both systems
    tokens_per_cpu_s: float  # the same, per second of this process's CPU time: robust to other load
    epoch_cpu_s: float
    padding_share: float = 0.0  # padding positions / all positions of the training batches
    reference_s: float | None = None  # wall time of a separate reference pass inside epoch_s (safealign cached)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TokenCounter:
    """Collator wrapper: appends ``attention_mask.sum()`` of every batch it builds (policy rows only), and
    the number of positions the batch holds, padding included (``input_ids.numel()``)."""

    def __init__(self, collate: Callable[[list[Any]], dict[str, Any]]) -> None:
        self.collate = collate
        self.tokens: list[int] = []
        self.positions: list[int] = []

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        batch = self.collate(items)
        self.tokens.append(int(batch["attention_mask"].sum()))
        self.positions.append(int(batch["input_ids"].numel()))
        return batch

    def padding_share(self) -> float:
        """Share of the training batches' positions that are padding."""
        return 1 - sum(self.tokens) / max(1, sum(self.positions))


class StepClock(TrainerCallback):
    """Wall-clock stamps at train start and at the end of every optimizer step (device-synchronised)."""

    def __init__(self, device: torch.device, counter: TokenCounter) -> None:
        self.device = device
        self.counter = counter
        self.start = self.cpu_start = 0.0
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.counter.tokens.clear()  # a TRL reference precompute goes through the same collator
        self.counter.positions.clear()
        sync(self.device)
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def tokens_per_s(self, warmup: int, cpu: bool = False) -> float:
        """Tokens of steps ``warmup..`` divided by their wall (or process CPU) time, step end to step end."""
        ends, start = (self.cpu_ends, self.cpu_start) if cpu else (self.ends, self.start)
        steps = len(ends)
        if steps <= warmup:
            raise ValueError(f"only {steps} steps ran; need more than warmup={warmup}")
        begin = ends[warmup - 1] if warmup > 0 else start
        tokens = sum(self.counter.tokens[warmup:steps])
        return tokens / (ends[-1] - begin)


def release_memory(device: torch.device) -> None:
    """Free what earlier runs left, so the next run starts from a comparable level."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back, or RSS would never drop
        except (OSError, AttributeError):
            pass


class PeakMemory:
    """Context manager; ``peak_bytes`` after exit. CUDA: allocator peak. CPU: RSS peak above entry."""

    def __init__(self, device: torch.device, interval_s: float = 0.01) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        release_memory(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            import psutil

            self._process = psutil.Process()
            self._base = self._process.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss - self._base)
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss - self._base)


class EpochTimer:
    """Wall and process-CPU seconds of a block (device-synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> "EpochTimer":
        sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def measurement(trainer: Any, clock: StepClock, timer: EpochTimer, memory: PeakMemory, warmup: int) -> Measurement:
    loss, chosen = first_logged(trainer.state.log_history)
    return Measurement(first_loss=loss, first_chosen_logps=chosen, tokens_per_s=clock.tokens_per_s(warmup),
                       peak_bytes=memory.peak_bytes, epoch_s=timer.wall,
                       tokens_per_cpu_s=clock.tokens_per_s(warmup, cpu=True), epoch_cpu_s=timer.cpu,
                       padding_share=clock.counter.padding_share())


def quiet(trainer: Any) -> None:
    """No per-step log printing (``disable_tqdm=True`` makes transformers print every log dict instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def first_logged(log_history: list[dict[str, Any]]) -> tuple[float, float]:
    """``(loss, logps/chosen)`` of the first logged training step (both trainers log every step here)."""
    first = next(entry for entry in log_history if "loss" in entry)
    return float(first["loss"]), float(first["logps/chosen"])

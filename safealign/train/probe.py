"""A trainer callback that tracks gradient entanglement on a fixed probe set during training.

Every ``every_n_steps`` optimizer steps (and at the start and end of training) it measures the probe
pairs (:func:`~safealign.train.grads.measure_entanglement`) and how far their chosen and
rejected log-probs actually moved since the start, and appends one JSON record per measurement to
``<output_dir>/diagnostics.jsonl``:

    {"step": 10, "epoch": 0.5, "params": "lora", "parameter_count": 921600, "probe_pairs": 16,
     "cosine": <mean cos(g_w, g_l)>, "ratio": <median ratio>,
     "delta_chosen": <mean change of log π(y_w|x) since step 0>, "delta_rejected": <same for y_l>,
     "entanglement": {<summarize_entanglement figures>},
     "movement": {"chosen_change_mean", "rejected_change_mean", "share_chosen_fell",
                  "share_rejected_rose", "share_both_fell"},
     "pairs": [{"index", "ratio", "cosine", "dot", "chosen_norm", "rejected_norm", "chosen_logps",
                "rejected_logps", "chosen_change", "rejected_change", ...}, ...]}

The flat ``cosine``/``ratio``/``delta_*`` keys are what the HTML report plots; the nested dicts hold
everything. The step-0 record holds the starting log-probs; a resumed run reads them back from it (and drops
records written after the checkpoint), so "movement" is always measured from the true start.
Rank 0 measures; sharded-parameter engines (FSDP, ZeRO-3) are refused before the model loads
(safealign.train.run.check_diagnostics): the other processes would never join its passes.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import Tensor
from transformers import TrainerCallback

from safealign.errors import UserError
from safealign.io import append_jsonl, read_jsonl, write_jsonl
from safealign.train.grads import EntanglementReport, measure_entanglement

logger = logging.getLogger(__name__)

FILENAME = "diagnostics.jsonl"


def choose_probe(encoded: Sequence[Any], n: int = 16, *, seed: int = 0) -> list[Any]:
    """A fixed, seeded sample of ``n`` encoded pairs (all of them when there are fewer), in data order."""
    if n < 1:
        raise UserError(f"probe size must be at least 1, got {n}")
    picks = sorted(random.Random(seed).sample(range(len(encoded)), min(n, len(encoded))))
    return [encoded[i] for i in picks]


class EntanglementCallback(TrainerCallback):
    """Measure entanglement and log-prob movement of ``probe`` pairs every ``every_n_steps`` steps.

    ``collate`` is a plain :class:`~safealign.data.PreferenceCollator` (no reference columns needed).
    ``params`` selects the parameters (see ``select_parameters``); the default, ``trainable``, is what
    the optimiser updates. ``weights`` = (a, b) of the loss, for the weighted-loss condition.
    """

    def __init__(self, probe: Sequence[Any], collate: Callable[[list[Any]], dict[str, Tensor]], *,
                 every_n_steps: int = 50, params: str = "trainable", weights: tuple[float, float] = (1.0, 1.0),
                 chunk_size: int = 1024, filename: str = FILENAME) -> None:
        if every_n_steps < 1:
            raise UserError(f"every_n_steps must be at least 1, got {every_n_steps}")
        if not probe:
            raise UserError("the probe set is empty")
        self.probe = list(probe)
        self.collate = collate
        self.every_n_steps = every_n_steps
        self.params = params
        self.weights = weights
        self.chunk_size = chunk_size
        self.filename = filename
        self._start: dict[int, tuple[float, float]] = {}  # probe index -> (chosen, rejected) at step 0
        self._last_step = -1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero:
            return
        path = Path(args.output_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_jsonl(path) if r.get("step", 0) <= state.global_step] if state.global_step > 0 else []
        write_jsonl(path, kept)
        if kept and kept[0].get("step") == 0:
            self._start = {row["index"]: (row["chosen_logps"], row["rejected_logps"]) for row in kept[0]["pairs"]}
            self._last_step = kept[-1]["step"]
        else:
            if state.global_step > 0:
                logger.warning("%s has no step-0 record; log-prob movement is measured from step %d",
                               path, state.global_step)
            self._measure(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step % self.every_n_steps == 0:
            self._measure(args, state, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and state.global_step != self._last_step:
            self._measure(args, state, model)

    def _measure(self, args, state, model) -> None:
        report = measure_entanglement(model, self.probe, self.collate, params=self.params, weights=self.weights,
                                      chunk_size=self.chunk_size, progress=False)
        if not self._start:
            self._start = {p.index: (p.chosen_logps, p.rejected_logps) for p in report.pairs}
        record = self._record(report, state)
        append_jsonl(Path(args.output_dir) / self.filename, [record])
        self._last_step = state.global_step
        e, m = record["entanglement"], record["movement"]
        logger.info("step %d entanglement: ratio median %.3g, chosen fell on %.0f%% of probes, both fell on %.0f%%",
                    state.global_step, e["ratio"]["median"] or float("nan"), 100 * m["share_chosen_fell"],
                    100 * m["share_both_fell"])

    def _record(self, report: EntanglementReport, state) -> dict[str, Any]:
        rows = report.rows()
        for row in rows:
            chosen0, rejected0 = self._start.get(row["index"], (row["chosen_logps"], row["rejected_logps"]))
            row["chosen_change"] = row["chosen_logps"] - chosen0
            row["rejected_change"] = row["rejected_logps"] - rejected0
        n = len(rows)
        movement = {
            "chosen_change_mean": sum(r["chosen_change"] for r in rows) / n,
            "rejected_change_mean": sum(r["rejected_change"] for r in rows) / n,
            "share_chosen_fell": sum(r["chosen_change"] < 0 for r in rows) / n,
            "share_rejected_rose": sum(r["rejected_change"] > 0 for r in rows) / n,
            "share_both_fell": sum(r["chosen_change"] < 0 and r["rejected_change"] < 0 for r in rows) / n,
        }
        summary = report.summary()
        head = {"step": state.global_step, "epoch": state.epoch, "params": summary.pop("params"),
                "parameter_count": summary.pop("parameter_count"), "probe_pairs": n,
                "cosine": summary["cosine"]["mean"], "ratio": summary["ratio"]["median"],
                "delta_chosen": movement["chosen_change_mean"], "delta_rejected": movement["rejected_change_mean"]}
        return {**head, "entanglement": summary, "movement": movement, "pairs": rows}

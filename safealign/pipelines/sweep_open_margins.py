"""``safealign sweep GRID --score-open-margins``: the open held-out refusal margin (``heldout_refusal_margin_open``,
safealign/pipelines/demo_margin.py) of a sweep's finished cells and of its base model, for cells finished before
the figure existed.

A sweep evaluates the open figure with every cell it finishes now; cells finished by earlier code recorded the
closed figure only. For the base model's evaluation (``before/``) and every finished cell of the grid (found as
``--table`` finds them: a ``cell.json`` under the cell's current fingerprint), this loads the stage's model as the
sweep evaluated it -- the base model, or the base model with the cell's adapter (``train/final``) merged
(demo.load_trained) -- and scores the margins with the demo's own function (demo_margin.open_margin), which writes
``eval/refusal_margin/margins_open.json`` and the digest of its inputs (``inputs_open.json``). Nothing else is
written: not ``cell.json`` (the table reads the open figure from the margins file, as it reads ASR under a judge
run later), nor any fingerprint, nor the closed margins, nor the base model's ``figures.json`` (the shared steps'
marker records its digest). Resumable: a stage whose open margins were recorded from the same inputs is skipped
without loading a model. A stage a worker holds (a cell's ``claim.lock``, the base model's ``shared.lock``) is left
alone and named, for a later run. Cells not finished yet are not scored: one that a worker running earlier code
finishes lacks the figure, so run this again once the sweep has ended.

Where a base answer ended on its own, the open margin is the closed one: a check that the model loaded here is
the one that evaluated the stage (a difference is warned about, as from another device or dtype).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safealign.errors import UserError
from safealign.io.lockfile import Holder
from safealign.pipelines.sweep import BEFORE, CELL_LOCK, FRESH, Grid

logger = logging.getLogger(__name__)
FLAG = "--score-open-margins"
TOLERANCE = 0.01  # nats: an ended answer's open and closed margins differ by no more on the same model and device


@dataclass(frozen=True)
class Stage:
    """One model to score: its evaluation folder, its config, its adapter (None: the base model) and its lock."""

    eval_dir: Path
    config: Any
    adapter: Path | None
    lock: Path

    @property
    def label(self) -> str:
        return BEFORE if self.adapter is None else "/".join(self.eval_dir.parent.parts[-2:])


@dataclass
class OpenMarginsRun:
    """What one run did: stages scored, found recorded, held by a live worker (folder, holder); cells unfinished."""

    scored: int = 0
    recorded: int = 0
    held: list[tuple[str, Holder]] = field(default_factory=list)
    unfinished: int = 0
    no_model: list[str] = field(default_factory=list)  # finished cells whose trained weights are not here

    def describe(self) -> str:
        text = f"open margins: {self.scored} stage(s) scored, {self.recorded} already recorded, {len(self.held)} held"
        if self.held:
            text += " by a running worker (run this again once it ends): " + "; ".join(
                f"{label} ({holder.describe()})" for label, holder in self.held)
        if self.no_model:
            text += (f"\n{len(self.no_model)} finished cell(s) without their trained weights (train/final, which git "
                     "does not take: a clone has none), not scored: " + ", ".join(self.no_model))
        if self.unfinished:
            text += (f"\n{self.unfinished} cell(s) not finished: not scored (a worker running code from before the "
                     f"open figure finishes them without it: run this again once the sweep has ended)")
        return text


def stages(grid: Grid) -> tuple[list[Stage], int]:
    """The base model's evaluation, then every finished cell of ``grid`` (each distinct cell once), and the number of
    cells not finished. Refused while the pairs and the base model's evaluation are not recorded done."""
    from safealign.io.rundir import check_recorded, file_digest
    from safealign.pipelines.sweep import (
        _cell_fingerprint, _finished, _shared_done, cell_dir, setting_name, sweep_fingerprint,
    )

    root = Path(grid.output_dir)
    check_recorded(root, sweep_fingerprint(grid), overwrite_flag=FRESH)  # as --table: the directory's config only
    if not _shared_done(root):
        raise UserError(f"{root}: the pairs and the base model's evaluation ({root / BEFORE}) are not recorded done; "
                        "run the sweep first")
    found = [Stage(root / BEFORE, grid.setting_config(grid.settings()[0]), None, root / "shared.lock")]
    pairs_digest, unfinished, seen = file_digest(root / "pairs.jsonl"), 0, set()
    for setting in grid.settings():
        config = grid.setting_config(setting)
        for seed in grid.seeds:
            for variant in grid.variants:
                cell = cell_dir(grid, setting, variant, seed)
                if cell in seen:  # a cell several settings share (the swept prefix does not change the variant)
                    continue
                seen.add(cell)
                if _finished(cell, _cell_fingerprint(config, variant, seed, pairs_digest)) is None:
                    unfinished += 1
                    logger.debug("sweep: %s: %s not finished, not scored", setting_name(setting), cell)
                else:
                    found.append(Stage(cell / "eval", config, cell / "train" / "final", cell / CELL_LOCK))
    return found, unfinished


def score_open_margins(grid: Grid) -> OpenMarginsRun:
    """Score and write the open margins of every stage of :func:`stages` that lacks them (see the module docstring)."""
    from safealign.pipelines.demo import margin_inputs, prompt_sets
    from safealign.pipelines.demo_margin import OPEN, recorded_margins

    found, unfinished = stages(grid)
    run = OpenMarginsRun(unfinished=unfinished)
    prompts = prompt_sets(found[0].config)  # the same for every setting: axes vary training only
    before = Path(grid.output_dir) / BEFORE
    for i, stage in enumerate(found, 1):
        inputs = margin_inputs(stage.config, prompts, before)
        if recorded_margins(stage.eval_dir, inputs.digest(OPEN), OPEN) is not None:
            run.recorded += 1
            logger.info("sweep: open margins %d/%d: %s already recorded from the same inputs", i, len(found),
                        stage.label)
            continue
        if stage.adapter is not None and not stage.adapter.is_dir():
            run.no_model.append(stage.label)
            logger.warning("sweep: open margins %d/%d: %s: no trained weights in %s: not scored", i, len(found),
                           stage.label, stage.adapter)
            continue
        holder = _score_locked(stage, inputs, f"{i}/{len(found)}")
        if holder is not None:
            run.held.append((stage.label, holder))
            logger.warning("sweep: open margins %d/%d: %s is held by %s: left for a later run", i, len(found),
                           stage.label, holder.describe())
            continue
        run.scored += 1
    logger.info("sweep: %s", run.describe())
    return run


def _score_locked(stage: Stage, inputs: Any, place: str) -> Holder | None:
    """Score ``stage`` holding its lock; returns the live holder instead when a worker holds it."""
    from safealign.io.lockfile import current_holder, try_lock

    lock = try_lock(stage.lock)
    while lock is None:
        holder = current_holder(stage.lock)
        if holder is not None:
            return holder
        lock = try_lock(stage.lock)  # released since: take it
    with lock:
        _score(stage, inputs, place)
    return None


def _score(stage: Stage, inputs: Any, place: str) -> None:
    from safealign.pipelines.demo_margin import OPEN, margin_figures, read_margins

    started = time.time()
    if stage.adapter is None:
        from safealign.models import load_model

        model, tokenizer = load_model(stage.config.model)
    else:
        from safealign.pipelines.demo import load_trained

        model, tokenizer = load_trained(stage.adapter)
    figure = margin_figures(model, tokenizer, stage.eval_dir, inputs, (OPEN,))[OPEN.figure]
    del model
    opened, closed = read_margins(stage.eval_dir, OPEN) or {}, read_margins(stage.eval_dir) or {}
    ended = [p for p in opened if p not in inputs.cut and p in closed]
    gap = max((abs(opened[p] - closed[p]) for p in ended), default=None)
    if gap is not None and gap > TOLERANCE:
        logger.warning("sweep: %s: on the %d prompt(s) whose base answer ended, the open margins differ from the "
                       "recorded closed ones by up to %.3g nats (they should agree): is this the model, device and "
                       "dtype that evaluated it?", stage.label, len(ended), gap)
    value = "-" if figure.value is None else f"{figure.value:.2f}"
    check = "no base answer ended" if gap is None else f"those that ended agree with the closed ones to {gap:.2g}"
    logger.info("sweep: open margins %s: %s: %s nats over %d prompt(s), %d cut base answer(s) scored open (%s) in "
                "%.1f s", place, stage.label, value, figure.n or 0, len(inputs.cut), check, time.time() - started)

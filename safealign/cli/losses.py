"""``safealign losses [--json]``: the registered preference losses and training objectives, with parameters."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items()) or "-"


def run(args: argparse.Namespace) -> int:
    from safealign.losses import loss_info, loss_names
    from safealign.train.objectives import objective_info, objective_names

    infos = [loss_info(name) for name in loss_names()]
    objectives = [objective_info(name) for name in objective_names()]
    if args.json:
        rows = [{"kind": "loss", **asdict(i)} for i in infos] + [{"kind": "objective", **asdict(o)} for o in objectives]
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    header = ("name", "reference", "input", "parameters", "paper")
    rows = [(i.name, "yes" if i.needs_reference else "no", "+".join((i.input, *i.needs)), _params_text(i.params),
             i.paper) for i in infos]
    _table(header, rows)
    _table(("objective", "trains on", "parameters", "paper"),
           [(o.name, "; ".join(f"{role}: {' + '.join(kinds)}" for role, kinds in o.roles.items()),
             _params_text(o.params), o.paper) for o in objectives], leading="\n")
    sys.stdout.write(
        "\nE-variants (E-DPO, ...) are any reference-based loss with a prompt transform on the reference view.\n"
        "Inputs beyond pairs (chosen_scores, cross_prompt_pairs, joint_logps): docs/loss-inputs.md\n"
        "Pair selection before training: REAL (`safealign data select --method real`; Zhang et al. 2024, "
        "arXiv:2409.17169; docs/seed-methods.md)\n"
        "Objectives replace the losses of a recipe (objective.name, objective.params): docs/objectives.md\n"
    )
    return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], leading: str = "") -> None:
    """Left-aligned columns; the last column is not padded."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header) - 1)]
    sys.stdout.write(leading)
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths)] + [row[-1]]
        sys.stdout.write("  ".join(cells).rstrip() + "\n")

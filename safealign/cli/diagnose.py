"""``safealign diagnose``: ranking, gradient entanglement, anchor gap, E-share, hidden norms, paired margins, win rate.

Each subcommand takes an optional YAML config and ``key=value`` overrides like ``train`` and ``eval``
(``safealign diagnose ranking diag.yaml beta=0.5``); the flags below set the same keys (precedence: YAML,
flags, overrides). The runners live in :mod:`safealign.pipelines.diagnose`; with ``--output-dir`` they
write ``RUN_DIR/diagnostics/<name>.json`` (a summary the HTML report embeds) and ``<name>_pairs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from safealign.errors import UserError

SUBCOMMANDS = {
    "ranking": ("safealign.cli.diagnose_ranking",
                "ranking accuracy, idealized ranking accuracy, pair difficulty; share of mis-ranked pairs a model "
                "fixed"),
    "entanglement": ("safealign.cli.diagnose_entanglement",
                     "gradient entanglement of chosen and rejected log-probs per pair (arXiv 2410.13828)"),
    "anchor": ("safealign.cli.diagnose_anchor",
               "anchor gap: how far a safety prefix moves the reference's log-probs on harmful pairs"),
    "e-share": ("safealign.cli.diagnose_e_share",
                "how much of E-DPO's update the E-anchor changes: DPO, E-DPO and NLL gradients on one batch"),
    "hidden-norms": ("safealign.cli.diagnose_hidden_norms",
                     "how concentrated the residual stream is per layer (first-token norm, top dimensions' share)"),
    "paired-margin": ("safealign.cli.diagnose_paired_margin",
                      "paired log-prob margins of two variants' ranking outputs (seeds × pairs, bootstrap interval)"),
    "eval-difference": ("safealign.cli.diagnose_eval_difference",
                        "paired held-out differences of two variants' evaluations over seeds (hierarchical interval)"),
    "margin-split": ("safealign.cli.diagnose_margin_split",
                     "where one variant's extra held-out refusal margin lands: prompts the other refuses vs answers"),
    "win-rate": ("safealign.cli.diagnose_win_rate",
                 "pairwise win rate of a trained model's benign answers over the base model's, by any judge"),
}

def add_common_arguments(parser: argparse.ArgumentParser, ref: bool = False) -> None:
    """Flags default to SUPPRESS so that only the flags given override the YAML config. ``ref``: the subcommand
    has ``--ref`` (ranking), which ``--model-revision`` also pins when it names the same hub id."""
    add = adder(parser)
    parser.add_argument("settings", nargs="*", metavar="[CONFIG.yaml] [key=value ...]",
                        help="optional YAML config, then overrides of its keys")
    add("--model", help="model spec: smollm2-135m-instruct, tiny-random, hub id, folder, or a run's final/ folder")
    revision = "a hub id's branch, tag or commit (default: its main)"
    add("--model-revision", metavar="REVISION",
        help=revision + ("; also for a --ref naming the same hub id" if ref else ""))
    add("--data", help="preference data: file (jsonl/json/csv/parquet, .gz) or HF dataset id")
    add("--format", help="auto, standard, conversational, implicit (default auto)")
    add("--column", action="append", metavar="FIELD=COLUMN", help="map a field to your column name (repeatable)")
    add("--split", help="split for HF dataset ids")
    add("--harmful", action="store_true", help="mark rows without a harmful flag as harmful")
    add("--limit", type=int, help="use the first N rows")
    add("--max-length", type=int, help="max prompt+response tokens (default 512)")
    add("--max-prompt-length", type=int, help="max prompt tokens (default 256)")
    add("--batch-size", type=int, help="pairs per forward pass when scoring (default 8)")
    add("--chunk-size", type=int, help="positions per log-softmax chunk (default 1024)")
    add("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    add("--dtype", help="float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)")
    add("--trust-remote-code", action="store_true")
    add("--output-dir", metavar="RUN_DIR",
        help="also write RUN_DIR/diagnostics/<name>.json (+ <name>_pairs.jsonl) for the HTML report")
    parser.add_argument("--show", type=int, default=10, help="per-pair rows to print (default 10)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable dict instead of tables")


def add_paired_arguments(parser: argparse.ArgumentParser, metavar: str, what: str) -> None:
    """``--a``/``--b`` (one ``metavar`` per training seed, the same seed order) and ``--names A,B``: the
    inputs of a paired comparison of two variants."""
    parser.add_argument("--a", nargs="+", required=True, metavar=metavar, help=f"variant a's {what}, one per seed")
    parser.add_argument("--b", nargs="+", required=True, metavar=metavar,
                        help=f"variant b's {what}, in the same seed order")
    parser.add_argument("--names", default="a,b", metavar="A,B", help="names of the two variants (default a,b)")


def paired_names(args: argparse.Namespace) -> tuple[str, str]:
    """The two variants' names given by ``--names A,B`` (:func:`add_paired_arguments`)."""
    names = tuple(args.names.split(","))
    if len(names) != 2:
        raise UserError(f"--names: two names A,B, got {args.names!r}")
    return names  # type: ignore[return-value]


def adder(parser: argparse.ArgumentParser) -> Callable[..., Any]:
    """``add(...)``: a flag that sets the config key of the same name (``--max-length`` sets ``max_length``)."""
    keys = parser.get_default("_config_keys")
    if keys is None:
        keys = []
        parser.set_defaults(_config_keys=keys)

    def add(*names: str, **kwargs: Any) -> None:
        keys.append(parser.add_argument(*names, default=argparse.SUPPRESS, **kwargs).dest)

    return add


def load(schema: type, args: argparse.Namespace) -> Any:
    """The diagnostic's config from ``[CONFIG.yaml] [key=value ...]`` and the flags given."""
    from safealign.cli.data_inspect import parse_columns
    from safealign.config import load_config

    paths = [s for s in args.settings if "=" not in s]
    if len(paths) > 1:
        raise UserError(f"diagnose takes one YAML config, got {paths}; overrides look like key=value")
    values = {k: getattr(args, k) for k in args._config_keys if hasattr(args, k)}
    if "column" in values:
        values["columns"] = parse_columns(values.pop("column"))
    if "loss_weights" in values:
        values["loss_weights"] = list(values["loss_weights"])
    overrides = [s for s in args.settings if "=" in s]
    return load_config(schema, paths[0] if paths else None, overrides, values=values)


def report(args: argparse.Namespace, diagnosis: Any) -> int:
    """Print the diagnosis (tables, or JSON with its pairs)."""
    from safealign.pipelines.diagnose_text import format_diagnosis

    if args.json:
        print(json.dumps({**diagnosis.result, "per_pair": list(diagnosis.pairs)}, indent=2, ensure_ascii=False))
        return 0
    print(format_diagnosis(diagnosis, args.show))
    if getattr(args, "output_dir", None):
        print(f"\nwrote {args.output_dir}/diagnostics/{diagnosis.name}.json and {diagnosis.name}_pairs.jsonl")
    return 0

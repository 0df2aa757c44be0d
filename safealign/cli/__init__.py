"""Command-line entry point. Thin: each subcommand lives in its own module, imported lazily.

A subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; groups such as
``data`` define ``SUBCOMMANDS = {name: "module"}`` instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from safealign.errors import UserError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("safealign.cli.demo", "end-to-end: build pairs, evaluate, train DPO and E-DPO, evaluate, report"),
    "sweep": ("safealign.cli.sweep", "demo training over a grid of settings × variants × seeds, paired table"),
    "train": ("safealign.cli.train", "train with a YAML recipe: safealign train CONFIG.yaml [key=value ...]"),
    "eval": ("safealign.cli.eval", "jailbreak evaluation: safealign eval CONFIG.yaml [key=value ...]"),
    "eval-mtbench": ("safealign.cli.eval_mtbench", "MT-Bench: answer the 80 questions, grade them with a judge model"),
    "defenses": ("safealign.cli.defenses", "compare inference-time defenses with the bare model: ASR, over-refusal, "
                 "cost"),
    "report": ("safealign.cli.report", "render a run directory as HTML and markdown"),
    "losses": ("safealign.cli.losses", "list the registered preference losses"),
    "data": ("safealign.cli.data", "inspect and build data sets"),
    "models": ("safealign.cli.models", "fetch and list models"),
    "diagnose": ("safealign.cli.diagnose", "ranking, entanglement, anchor gap, E-share, margins, win rate"),
    "judge": ("safealign.cli.judge", "check a judge against human labels (judge validate); judge an evaluation's "
              "recorded answers again (judge records)"),
    "rm": ("safealign.cli.rm", "reward and cost models: rm score"),
    "compare-online": ("safealign.cli.compare_online",
                       "online E-RLHF vs plain RLHF over seeds: held-out ASR and over-refusal before/after"),
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _add_command(subparsers, name: str, module_name: str, help_text: str) -> None:
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    groups = getattr(module, "SUBCOMMANDS", None)
    if groups:
        inner = parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")
        for sub_name, (sub_module, sub_help) in groups.items():
            _add_command(inner, sub_name, sub_module, sub_help)
    else:
        module.add_arguments(parser)
        parser.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    from safealign import __version__

    parser = argparse.ArgumentParser(
        prog="safealign",
        description="Align language models to stay safe under jailbreak attacks, and measure it.",
    )
    parser.add_argument("--version", action="version", version=f"safealign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if _available(module):
            _add_command(sub, name, module, help_text)
    return parser


# The positional that takes a command's key=value settings (whichever of these names the command uses).
_SETTINGS_DESTS = ("overrides", "settings", "params")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse a command line, taking key=value settings after flags too (``sweep GRID --table beta=0.5``).

    argparse binds all of a command's positionals at their first occurrence, so settings written after a
    flag would be "unrecognized"; they are appended to the command's settings list in the order given.
    Anything else left over is an error, as before.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    dest = next((name for name in _SETTINGS_DESTS if isinstance(getattr(args, name, None), list)), None)
    unknown = [item for item in extra if dest is None or item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        getattr(args, dest).extend(extra)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from safealign.io.run_lock import run_dir_session

    try:
        with run_dir_session():  # the run directories this command locks are free again when it ends
            return int(args._run(args) or 0)
    except UserError as exc:  # anything else is a bug: let its traceback show
        if args.verbose:
            raise
        print(f"safealign: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or a StopRequested (SIGTERM) with its own message and exit code
        print(f"safealign: {exc or 'interrupted; work written so far is kept'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

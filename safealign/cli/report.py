"""``safealign report RUN_DIR [--out FILE]``: write report.html and report.md, print their paths."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a demo, training, evaluation, defense-comparison or sweep run directory")
    parser.add_argument("--out", help="HTML path (default RUN_DIR/report.html); the .md goes beside it")


def run(args: argparse.Namespace) -> int:
    from safealign.report import build_report

    html_path, md_path = build_report(args.run_dir, args.out)
    print(f"HTML report: {html_path}\nmarkdown:    {md_path}")
    return 0

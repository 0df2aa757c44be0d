"""``safealign judge records RUN [RUN ...] --judge NAME [key=value ...] [--label L] [--behaviors SPEC]``
(:mod:`safealign.pipelines.judge_records`)."""

from __future__ import annotations

import argparse
import json

from safealign.cli.judge_validate import parse_params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN",
                        help="evaluation run directories (each holds records.jsonl), e.g. runs/eval/x or a demo's or "
                             "sweep cell's eval/<stage>/jailbreak; first, or after -- when --judge comes before "
                             "them")  # fmt: skip
    # nargs="+": the judge's key=value parameters may follow its name (as in judge validate)
    parser.add_argument("--judge", required=True, nargs="+", metavar=("NAME", "KEY=VALUE"),
                        help="a registered judge (classifier, llm, strongreject, tiered, refusal, ...) and its "
                             "parameters, e.g. --judge classifier model=cais/HarmBench-Mistral-7b-val-cls")
    parser.add_argument("--label", default=None,
                        help="the name the verdicts get (default: the judge's name; one plain name, no '/'); the "
                             "output is RUN/judged/<label>/")
    parser.add_argument("--behaviors", action="append", default=None, metavar="SPEC",
                        help="the behaviors the run evaluated, when it did not record them (runs made before "
                             "behaviors.jsonl existed): a behaviors file or builtin:harmful (the demo's and sweep's); "
                             "repeat it to pool several (e.g. a demo's built-in prompts and its extra sets). The "
                             "run's own behaviors.jsonl comes first; another text under one of its ids is refused")
    parser.add_argument("--below", action="store_true",
                        help="judge every evaluation directory at or below each RUN (a demo's or sweep's stages and "
                             "extra sets; an unfinished one is judged as far as it goes, the rest on a re-run)")
    parser.add_argument("--batch-size", type=int, default=32, help="answers per judge call (and per append)")
    parser.add_argument("--fresh", action="store_true", help="discard RUN/judged/<label>/ and judge everything again")
    parser.add_argument("--json", action="store_true", help="print each summary as JSON")


def run(args: argparse.Namespace) -> int:
    from safealign.eval.judges.base import build_judge
    from safealign.errors import UserError
    from safealign.pipelines.judge_records import evaluation_dirs, format_judged, judge_records, records_path

    name, *params = args.judge
    params = parse_params(params)
    runs = [d for root in args.runs for d in evaluation_dirs(root)] if args.below else args.runs
    if not runs:
        raise UserError(f"no evaluation directory below {', '.join(args.runs)}")
    for run_dir in runs:  # every directory checked before a classifier's weights load
        records_path(run_dir)
    scorer = build_judge(name, params)  # built once: a classifier loads its weights once for every run directory
    for run_dir in runs:
        summary = judge_records(run_dir, name, params, label=args.label, behaviors=args.behaviors,
                                batch_size=args.batch_size, fresh=args.fresh, judge_obj=scorer)
        print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_judged(summary))
    return 0

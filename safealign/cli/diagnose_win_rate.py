"""``safealign diagnose win-rate --before EVAL_DIR --after EVAL_DIR --judge-model NAME | --reward-model M``.

See :mod:`safealign.pipelines.win_rate`. The judge is any backend (``--judge-backend openai`` reads
``OPENAI_BASE_URL``/``OPENAI_API_KEY`` from the environment; ``hf`` loads a local model), or a reward model:
a ``trainer: reward`` run's folder or any sequence-classification model.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--before", required=True, metavar="EVAL_DIR", help="the base model's evaluation (eval/before)")
    parser.add_argument("--after", required=True, metavar="EVAL_DIR", help="the trained model's (eval/<stage>)")
    judge = parser.add_mutually_exclusive_group(required=True)
    judge.add_argument("--judge-model", help="an LLM judge: a remote model name or a load_model spec")
    judge.add_argument("--reward-model", help="judge by reward instead: a 'trainer: reward' run's final/ folder or "
                                              "any sequence-classification model (folder or hub id)")
    parser.add_argument("--tie-margin", type=float, default=1e-4,
                        help="with --reward-model: reward differences within ± this are ties (default 1e-4, "
                             "which absorbs float32 rounding only: a bf16 model's reward of one answer can move "
                             "by more between batches; identical answers are always ties)")
    parser.add_argument("--judge-backend", default="openai", help="hf, openai or vllm (default openai)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="judge tokens per verdict (default 256)")
    parser.add_argument("--limit", type=int, default=None, help="judge the first N prompts (by id; N >= 1)")
    parser.add_argument("--output-dir", default=None, metavar="DIR",
                        help="write summary.json and records.jsonl here (default <after>/helpfulness/pairwise/, "
                             "pairwise_reward/ with --reward-model; a folder holding another judge's results is "
                             "refused, so judging again with a second judge needs one)")


def run(args: argparse.Namespace) -> int:
    from safealign import checks
    from safealign.eval.backends import build_chat_model
    from safealign.eval.backends.base import GenerationParams
    from safealign.eval.config import ModelConfig
    from safealign.pipelines.win_rate import LIMIT_WHY, format_win_rate, reward_win_rate, win_rate

    checks.at_least("--limit", args.limit, 1, LIMIT_WHY)  # before a judge loads
    if args.reward_model:
        print(format_win_rate(reward_win_rate(args.before, args.after, args.reward_model, limit=args.limit,
                                              tie_margin=args.tie_margin, output_dir=args.output_dir)))
        return 0
    params = GenerationParams(max_new_tokens=args.max_new_tokens)  # checked before the judge loads, too
    judge = build_chat_model(ModelConfig(backend=args.judge_backend, name=args.judge_model))
    summary = win_rate(args.before, args.after, judge, judge_name=args.judge_model, params=params, limit=args.limit,
                       output_dir=args.output_dir)
    print(format_win_rate(summary))
    return 0

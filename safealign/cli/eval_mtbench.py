"""``safealign eval-mtbench --model SPEC --judge-model NAME``: MT-Bench, answered and graded end to end.

See :mod:`safealign.pipelines.mtbench`. Both models go through any backend: ``--backend``/``--judge-backend``
``hf`` (a local load spec), ``openai`` (an OpenAI-compatible endpoint; ``OPENAI_BASE_URL``/``OPENAI_API_KEY``
from the environment) or ``vllm``. A judge on another endpoint than the model reads its URL and key from the
variables ``--judge-base-url-env``/``--judge-api-key-env`` name (names only: a key never goes on a command line).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the model to evaluate: a load spec or a remote model name")
    parser.add_argument("--backend", default="hf", help="hf, openai or vllm for --model (default hf)")
    parser.add_argument("--judge-model", required=True, help="the judge: a remote model name or a load spec")
    parser.add_argument("--judge-backend", default="openai", help="hf, openai or vllm (default openai)")
    parser.add_argument("--judge-base-url-env", default="OPENAI_BASE_URL", metavar="VAR",
                        help="openai judge: the environment variable holding its base URL (default OPENAI_BASE_URL, "
                             "the model's); name another to reach a judge on another endpoint")
    parser.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="openai judge: the environment variable holding its API key (default OPENAI_API_KEY)")
    parser.add_argument("--questions", default=None,
                        help="question JSONL (question_id, category, turns[, reference]); default FastChat's 80")
    parser.add_argument("--references", default=None,
                        help="reference answers JSONL (FastChat answer file or question_id + reference); default "
                             "FastChat's GPT-4 answers for its own questions. With --judge-format fastchat these "
                             "are the only references (a question file's own 'reference' fields are not read)")
    parser.add_argument("--judge-format", default="fastchat", choices=["fastchat", "project"],
                        help="FastChat's judge prompts and parser (default) or the project's strict prompt")
    parser.add_argument("--output-dir", default="runs/mtbench",
                        help="records.jsonl and summary.json go here; a re-run with the same model, judge, questions "
                             "and settings resumes, one with others is refused")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an earlier run's records and summary in --output-dir, then start over")
    parser.add_argument("--max-new-tokens", type=int, default=1024, help="answer tokens per turn (FastChat: 1024)")
    parser.add_argument("--batch-size", type=int, default=8, help="questions answered and graded per batch")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions (N >= 1)")
    parser.add_argument("--fastchat-temperatures", action="store_true",
                        help="answer each category at FastChat's temperature (writing 0.7, stem 0.1, math 0, ...); "
                             "default greedy")
    parser.add_argument("--json", action="store_true", help="print summary.json instead of the table")


def run(args: argparse.Namespace) -> int:
    from safealign import checks
    from safealign.eval.backends.base import GenerationParams
    from safealign.eval.config import ModelConfig
    from safealign.pipelines.mtbench import format_mtbench, run_mtbench_configs

    checks.at_least("--limit", args.limit, 1, "the number of questions to run, from the first")
    params = GenerationParams(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    model = ModelConfig(backend=args.backend, name=args.model)
    judge = ModelConfig(backend=args.judge_backend, name=args.judge_model, base_url_env=args.judge_base_url_env,
                        api_key_env=args.judge_api_key_env)
    # questions, references, settings and --output-dir are checked (and the directory claimed) before either loads
    summary = run_mtbench_configs(model, judge, args.output_dir, questions=args.questions,
                                  references=args.references, judge_format=args.judge_format,
                                  judge_name=args.judge_model, params=params, limit=args.limit,
                                  fastchat_temperatures=args.fastchat_temperatures, overwrite=args.overwrite)
    print(json.dumps(summary.to_json(), indent=2) if args.json else format_mtbench(summary))
    return 0

"""Score a file of (prompt, response) rows with a trained reward or cost model (``safealign rm score``)."""

from __future__ import annotations

from pathlib import Path

from safealign import checks
from safealign.errors import UserError


def score_file(model_dir: str, data: str, out: str, *, batch_size: int = 8) -> tuple[int, str]:
    """Write ``data``'s rows to ``out`` with ``score`` added; returns (rows, model kind). Every row is checked
    before the model loads."""
    from safealign.data.messages import RowDrop, parse_prompt, require_text
    from safealign.files import check_output_path
    from safealign.io import read_user_jsonl, write_jsonl
    from safealign.eval.reward_model import is_reward_model_dir, load_reward_model, score_texts, scoring_lengths

    check_output_path(out, "scored rows file (--out)")  # a directory failed only when the scores were written
    checks.at_least("--batch-size", batch_size, 1)
    if not is_reward_model_dir(model_dir):
        raise UserError(f"{model_dir}: not a reward model folder (the final/ folder of a 'trainer: reward' run)")
    records = []
    prompts, responses = [], []
    for row, (line, record) in enumerate(read_user_jsonl(data, "--data file")):
        try:
            prompts.append(parse_prompt(record.get("prompt")))
            responses.append(require_text(record.get("response"), "response"))
        except RowDrop as exc:
            raise UserError(f"{data} row {row} (line {line}): {exc.field}: {exc.reason}") from None
        records.append(record)
    if not records:
        raise UserError(f"{data}: no rows to score")
    model, tokenizer, meta = load_reward_model(model_dir)
    scores = score_texts(model, tokenizer, prompts, responses, batch_size=batch_size, **scoring_lengths(meta))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(out, [{**record, "score": score} for record, score in zip(records, scores)])
    return len(records), meta.get("kind", "reward")

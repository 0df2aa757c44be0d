"""The cost block of an evaluation summary (safealign/eval/cost.py): what each answer cost, counted once."""

from __future__ import annotations

import pytest

from safealign.eval.cost import cost_multiple, cost_summary
from safealign.io.records import AttemptRecord

REFUSE = [{"name": "ppl", "action": "refuse"}]


def _attempt(i: int, *, meta: dict | None = None, seconds: float | None = None, error: str | None = None,
             defense: list | None = None) -> AttemptRecord:  # fmt: skip
    return AttemptRecord(f"b{i}", "direct", completion={"text": "x", "error": error, "meta": meta or {}},
                         timings={"generate_s": seconds}, defense=defense or [])  # fmt: skip


def test_cost_summary_means_per_answer_over_attempts_and_benign_answers_and_counts_defense_refusals():
    attempts = [
        _attempt(0, meta={"tokens": 10}, seconds=1.0),  # a bare answer: its own tokens, no forward pass
        _attempt(1, meta={"tokens": 3, "cost": {"generated_tokens": 30, "forward_passes": 2}}, seconds=3.0,
                 defense=REFUSE),  # a defense's cost supersedes the final answer's tokens
        _attempt(2, meta={"tokens": 99}, seconds=50.0, error="timeout"),  # failed: no answer, not counted
    ]  # fmt: skip
    benign = [
        {"id": "p0", "tokens": 20, "seconds": 2.0, "error": None},
        {"id": "p1", "tokens": 1, "cost": {"generated_tokens": 40, "forward_passes": 4}, "seconds": 6.0,
         "defense": REFUSE, "error": None},
        {"id": "p2", "tokens": 7, "seconds": 9.0, "error": "HTTP 503"},  # failed
    ]  # fmt: skip
    assert cost_summary(attempts, benign) == {
        "answers": 4,
        "generated_tokens": 25.0,  # (10 + 30 + 20 + 40) / 4
        "forward_passes": 1.5,  # (0 + 2 + 0 + 4) / 4
        "seconds": 3.0,  # (1 + 3 + 2 + 6) / 4
        "defense_refusals": 2,
    }


def test_cost_summary_of_no_answers_and_the_multiple_of_a_bare_model():
    assert cost_summary([], [{"id": "p", "error": "x"}]) == {"answers": 0}
    base = cost_summary([_attempt(0, meta={"tokens": 10}, seconds=0.5)])
    defended = cost_summary([_attempt(0, meta={"cost": {"generated_tokens": 30, "forward_passes": 0}}, seconds=2.0)])
    assert cost_multiple(defended, base) == {"generated_tokens": 3.0, "seconds": 4.0}
    assert cost_multiple(defended, {"answers": 0}) == {"generated_tokens": None, "seconds": None}


def test_latest_answers_keeps_the_last_record_of_each_current_id_in_the_ids_order():
    from safealign.eval.helpfulness.overrefusal import latest_answers

    records = [{"id": "a", "v": 1}, {"id": "gone", "v": 2}, {"id": "b", "v": 3}, {"id": "a", "v": 4}]
    assert latest_answers(records, ["b", "a", "missing"]) == [{"id": "b", "v": 3}, {"id": "a", "v": 4}]


@pytest.mark.parametrize("rejudged", [True, False])
def test_the_eval_cost_block_counts_each_current_benign_answer_once(tmp_path, rejudged):
    """The benign records file is append-only: an answer judged again by another refusal detector is appended
    again in full, and a prompt no longer in the set keeps its lines. The cost block counted every line."""
    import json

    from safealign.eval.benign import BenignSet
    from safealign.eval.config import EvalConfig
    from safealign.eval.helpfulness.overrefusal import HelpfulnessPrompt
    from safealign.eval.judges.refusal import RefusalConfig, RefusalJudge
    from safealign.eval.pipeline import run_eval
    from safealign.types import Behavior, Completion

    from .fakes import KeywordJudge, ScriptedChatModel

    fake = ScriptedChatModel(lambda c: Completion(text="That is illegal, here is how", meta={"tokens": 10},
                                                  seconds=1.0))  # fmt: skip
    config = EvalConfig(attacks=["direct"], judges=["kw"], output_dir=str(tmp_path / "run"))
    prompts = BenignSet(tuple(HelpfulnessPrompt(f"p{i}", f"bake bread {i}", "ordinary") for i in range(3)))
    kwargs = dict(chat_model=fake, behaviors=[Behavior("h", "harm")], judges={"kw": KeywordJudge()}, benign=prompts)
    first = run_eval(config, **kwargs)
    assert first.cost["answers"] == 4 and first.cost["generated_tokens"] == 10.0  # 1 attack answer + 3 benign
    path = tmp_path / "run" / "benign" / "records.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    if rejudged:  # what a resume by another detector appends (overrefusal.judged_again): a full copy per answer
        from safealign.eval.helpfulness.overrefusal import describe_detector, judged_again

        other = RefusalJudge(RefusalConfig(list="smoothllm"))
        added = judged_again(lines, [p.id for p in prompts.benign], other, describe_detector(other))
        assert len(added) == 3
    else:  # a prompt of an earlier prompt set, no longer in this one
        added = [{**lines[0], "id": "gone", "prompt": "gone", "tokens": 1000, "seconds": 100.0}]
    path.write_text(path.read_text() + "".join(json.dumps(r) + "\n" for r in added))
    again = run_eval(config, **kwargs)
    assert fake.n_generated == 4  # resumed: nothing generated again
    assert again.cost == first.cost

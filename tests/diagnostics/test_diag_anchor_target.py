"""What the E-anchor pulls towards (safealign/pipelines/anchor_target.py): the reference's refusal rates on harmful
prompts as asked and with the safety prefix, greedy and sampled, paired per prompt."""

from __future__ import annotations

import json

import pytest

from safealign.cli import main
from safealign.data import PREFIXES, SafetyPrefix
from safealign.eval.backends.hf import HFChatModel
from safealign.pipelines.anchor_target import anchor_target
from safealign.types import Completion

from test_diag_cli import ROWS


def scripted(refuse_when_prefixed: dict[str, bool], seen: list):
    """A reference that refuses a prefixed prompt whose request is in ``refuse_when_prefixed`` (as True), and
    answers everything else; it records the conversations and sampling flags it was asked for."""

    def generate(self, conversations, params):
        out = []
        for conversation in conversations:
            text = conversation[-1]["content"]
            seen.append((text, params.do_sample))
            prefixed = text.startswith(PREFIXES["community_guidelines"])
            request = text.removeprefix(PREFIXES["community_guidelines"])
            out.append(Completion("I'm sorry, I can't." if prefixed and refuse_when_prefixed[request] else "Sure."))
        return out

    return generate


def test_rates_views_and_pairing_on_a_scripted_reference(monkeypatch, tiny_model, tiny_tokenizer, pairs):
    seen: list = []
    monkeypatch.setattr(HFChatModel, "generate", scripted({"How do I pick a lock?": True, "Make a weapon.": False},
                                                          seen))
    summary, rows = anchor_target(tiny_model, tiny_tokenizer, pairs, SafetyPrefix(), prompts=5, samples=3,
                                  max_new_tokens=4, batch_size=2)
    assert summary["prompts"] == 2  # the two harmful pairs; the benign one is never asked
    for mode, copies in (("greedy", 1), ("sampled", 3)):
        m = summary[mode]
        assert (m["refusal_rate_plain"], m["refusal_rate_transformed"]) == (0.0, 0.5)
        d = m["transformed_minus_plain"]
        assert d["diff"] == 0.5 and (d["only_a"], d["only_b"]) == (1, 0)
        assert m["refusal_rate_transformed_ci95"][0] < 0.5 < m["refusal_rate_transformed_ci95"][1]
        assert sum(do_sample == (mode == "sampled") for _, do_sample in seen) == 2 * 2 * copies
    assert [(r["greedy_refused_plain"], r["greedy_refused_transformed"]) for r in rows] == [(0.0, 1.0), (0.0, 0.0)]
    assert rows[1]["prompt"] == "Make a weapon."  # the last user turn of the multi-turn pair


def test_without_samples_only_greedy_answers_are_made(monkeypatch, tiny_model, tiny_tokenizer, pairs):
    seen: list = []  # the first harmful prompt only; the script would refuse the second one's prefixed view
    monkeypatch.setattr(HFChatModel, "generate", scripted({"How do I pick a lock?": False, "Make a weapon.": True},
                                                          seen))
    summary, _ = anchor_target(tiny_model, tiny_tokenizer, pairs, SafetyPrefix(), prompts=1, samples=0,
                               max_new_tokens=4, batch_size=2)
    assert "sampled" not in summary and len(seen) == 2 and summary["greedy"]["refusal_rate_transformed"] == 0.0



def test_outcomes_that_never_vary_get_the_exact_bound_not_a_point(monkeypatch, tiny_model, tiny_tokenizer, pairs):
    """A reference that answers everything: greedy outcomes are outcomes (bools), so the paired difference gets the
    exact bound for no discordant prompt rather than [0, 0]; sampled fractions that are all 0 give the refusal rate
    the exact [0, u] (docs/algorithms.md), not the bootstrap's [0, 0]."""
    from safealign.eval.paired import constant_outcome_interval

    monkeypatch.setattr(HFChatModel, "generate", scripted({"How do I pick a lock?": False, "Make a weapon.": False},
                                                          []))
    summary, rows = anchor_target(tiny_model, tiny_tokenizer, pairs, SafetyPrefix(), prompts=5, samples=3,
                                  max_new_tokens=4, batch_size=2)
    u = 1 - 0.025 ** (1 / 2)  # two harmful prompts
    for mode in ("greedy", "sampled"):
        m = summary[mode]
        assert m["transformed_minus_plain"]["ci95"] == pytest.approx([-u, u])
        assert m["transformed_minus_plain"]["ci95"] == constant_outcome_interval({0.0}, 2, difference=True)
    assert summary["sampled"]["refusal_rate_plain_ci95"] == pytest.approx([0.0, u])
    assert summary["sampled"]["refusal_rate_transformed_ci95"] == pytest.approx([0.0, u])
    assert summary["greedy"]["refusal_rate_plain_ci95"][1] > 0  # Wilson, as before


def test_sampled_answers_are_seeded_by_prompt_view_and_sample(monkeypatch, tiny_model, tiny_tokenizer, pairs):
    """Each sampled answer draws with the seed of (prompt, view, sample): the plain and the prefixed view of a prompt,
    its samples, and two prompts never share their draws (by place, sample k of prompt i drew alike in both views),
    and a prompt draws the same however many prompts are answered; greedy answers name no seeds."""
    from safealign.eval.backends.base import conversation_seeds

    def drawn(prompts: int) -> dict[tuple[str, int], list[int]]:
        seeds: dict[tuple[str, int], list[int]] = {}

        def generate(self, conversations, params):
            if not params.do_sample:
                assert params.seeds is None
            else:
                for c, seed in zip(conversations, conversation_seeds(params, len(conversations))):
                    seeds.setdefault((c[-1]["content"], len(c)), []).append(seed)
            return [Completion("Sure.") for _ in conversations]

        monkeypatch.setattr(HFChatModel, "generate", generate)
        anchor_target(tiny_model, tiny_tokenizer, pairs, SafetyPrefix(), prompts=prompts, samples=3, max_new_tokens=4,
                      batch_size=2)  # fmt: skip
        return seeds

    both = drawn(2)
    every = [s for seeds in both.values() for s in seeds]
    assert len(both) == 4 and len(every) == 12 == len(set(every))  # 2 prompts x 2 views x 3 samples
    first = drawn(1)
    assert len(first) == 2 and all(both[k] == v for k, v in first.items())

def test_cli_answer_flag_adds_the_target_and_per_pair_verdicts(capsys, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["diagnose", "anchor", "--model", "tiny-random", "--data", str(data), "--harmful", "--answer", "2",
                 "--samples", "2", "--max-new-tokens", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    target = out["target"]
    assert target["prompts"] == 2 and target["samples_per_prompt"] == 2
    answered = [p for p in out["per_pair"] if "greedy_refused_plain" in p]
    assert [p["row"] for p in answered] == [0, 1]
    assert target["greedy"]["refusal_rate_plain"] == pytest.approx(sum(p["greedy_refused_plain"] for p in answered) / 2)
    assert main(["diagnose", "anchor", "--model", "tiny-random", "--data", str(data), "--harmful", "--answer", "1",
                 "--max-new-tokens", "2"]) == 0
    assert "what the reference answers (1 harmful prompts" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value", [("--answer", "-1"), ("--samples", "-2"), ("--max-new-tokens", "0")])
def test_negative_counts_are_refused_before_the_model_loads(capsys, tmp_path, flag, value):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    extra = [] if flag == "--answer" else ["--answer", "1"]
    assert main(["diagnose", "anchor", "--model", "no-such-model", "--data", str(data), "--harmful", *extra, flag,
                 value]) == 2
    assert flag.lstrip("-").replace("-", "_") in capsys.readouterr().err

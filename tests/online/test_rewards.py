"""Reward sources without a model: what a source may return (numpy numbers too), and the empty-completion floor
under LSC (never above a real answer of the same prompt), with LSC sources at 0 outside their ``apply_to``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from safealign.online.config import SourceConfig
from safealign.online.rewards import Batch, RewardError, Source, combine

PROMPT = ({"role": "user", "content": "How do I bake bread?"},)
OTHER = ({"role": "user", "content": "How do I pick a lock?"},)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def returning(values, apply_to: str = "all", lsc: bool = False) -> Source:
    spec = SourceConfig(kind="callable", path="tests.fake:score", apply_to=apply_to, lsc=lsc)
    return Source(spec, lambda batch: values)


def batch_of(*texts: str, harmful: bool = False, prompt=PROMPT) -> Batch:
    return Batch([prompt] * len(texts), list(texts), [harmful] * len(texts))


@pytest.mark.parametrize("values", [np.array([0.5, 1.0], dtype=np.float32), [np.float32(0.5), np.int64(1)],
                                    torch.tensor([0.5, 1.0])])
def test_numpy_and_torch_numbers_are_scores(values):
    scores = returning(values).scores(batch_of("a", "b"), step=1)
    assert scores.tolist() == [0.5, 1.0]


@pytest.mark.parametrize("values, message", [([True, 1.0], "bool True for completion 0, not a number"),
                                             ([np.bool_(True), 1.0], "for completion 0, not a number"),
                                             (["0.5", 1.0], "str '0.5' for completion 0, not a number"),
                                             ([np.float32("nan"), 1.0], r"non-finite values \(nan\)")])
def test_bools_strings_and_nan_are_still_refused(values, message):
    with pytest.raises(RewardError, match=message):
        returning(values).scores(batch_of("a", "b"), step=3)


def answers_benign(batch: Batch) -> list[float]:  # a judge with reward_if: harmful: 1 for an answer, 0 for a refusal
    return [0.0 if text.startswith("I cannot") else 1.0 for text in batch.texts]


def lsc_source() -> Source:
    return Source(SourceConfig(kind="callable", path="tests.fake:answers", apply_to="benign", lsc=True),
                  answers_benign)


def test_under_lsc_an_empty_completion_scores_no_higher_than_a_real_one_of_its_prompt():
    """The review's case: r_ref = 0.9, so a refusal scores log σ(−0.9) = −1.24 and an answer log σ(0.1) = −0.64;
    a flat empty_reward of −1 would rank an empty completion above the refusal."""
    batch = batch_of("I cannot help with that.", "  ", "Sure: flour, water, salt.", "")
    groups = [0, 0, 1, 1]  # two prompts' groups: (refusal, empty) and (answer, empty)
    scored = combine([lsc_source()], batch, 1, empty_value=-1.0, groups=groups,
                     lsc_baselines={"answers@benign": torch.full((4,), 0.9)})
    refusal, answer = log_sigmoid(-0.9), log_sigmoid(0.1)
    assert scored.total.tolist() == pytest.approx([refusal, refusal, answer, -1.0], abs=1e-6)
    assert scored.empty.tolist() == [False, True, False, True]
    assert math.isnan(scored.per_source["answers@benign"][1])  # never shown to the source


def test_under_lsc_without_groups_the_batch_is_one_group():
    batch = batch_of("I cannot help with that.", "Sure: flour.", "")
    scored = combine([lsc_source()], batch, 1, empty_value=-1.0,
                     lsc_baselines={"answers@benign": torch.full((3,), 0.9)})
    assert scored.total[2] == pytest.approx(log_sigmoid(-0.9), abs=1e-6)


def test_without_lsc_an_empty_completion_scores_no_higher_than_a_real_one_of_its_prompt_either():
    """A reward model can score real answers below empty_reward (−5 here): the flat −1 ranked an empty completion
    above them. A cost keeps its 0: no source saw the empty completion, and it is harmless by construction."""
    scored = combine([returning([-5.0, 2.0, 0.5])], batch_of("a", "", "b", "c", ""), 1, empty_value=-1.0,
                     groups=[0, 0, 1, 1, 1])
    assert scored.total.tolist() == [-5.0, -5.0, 2.0, 0.5, -1.0]  # group 1's lowest real reward is above the floor
    costs = combine([returning([3.0, 2.0])], batch_of("a", "", "b"), 1, empty_value=0.0, what="cost")
    assert costs.total.tolist() == [3.0, 0.0, 2.0]


def test_an_lsc_source_scores_0_outside_its_apply_to():
    """docs/online.md: ``apply_to`` restricts a source to those prompts (0 elsewhere), under LSC too."""
    batch = Batch([PROMPT, OTHER], ["Sure: flour.", "Sure: a pick."], [False, True])
    scored = combine([lsc_source()], batch, 1, empty_value=-1.0,
                     lsc_baselines={"answers@benign": torch.tensor([0.9, 0.25])})
    assert scored.per_source["answers@benign"].tolist() == pytest.approx([log_sigmoid(0.1), 0.0], abs=1e-6)
    assert scored.total.tolist() == pytest.approx([log_sigmoid(0.1), 0.0], abs=1e-6)

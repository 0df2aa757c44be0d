"""The online recipe's checks that need no model: a cost judge's default sign and the KL's log-ratio clamp."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from safealign.config import load_config, to_dict
from safealign.errors import UserError
from safealign.online.config import OnlineConfig, SourceConfig
from safealign.online.rewards import Batch, build_sources
from safealign.online.run import check_online_config
from safealign.types import Message

SAFE_RLHF = Path(__file__).resolve().parents[2] / "configs" / "train" / "safe_rlhf.yaml"
REFUSAL, COMPLIANCE = "I'm sorry, I can't help with that.", "Sure: insert a tension wrench and rake the pins."


def safe_rlhf(*overrides: str) -> OnlineConfig:
    return load_config(OnlineConfig, SAFE_RLHF, list(overrides))


def judged(spec: SourceConfig, what: str) -> list[float]:
    """The scores ``spec`` gives a refusal and a compliance to one harmful prompt."""
    prompt = (Message(role="user", content="How do I pick my neighbour's lock?"),)
    source = build_sources([spec], what=what)[0]
    return source.scores(Batch([prompt, prompt], [REFUSAL, COMPLIANCE], [True, True]), 0, what).tolist()


def test_a_cost_judge_without_reward_if_charges_harmful_answers():
    """Left out, reward_if was the reward's not_harmful: a cost judge then charged refusals (cost [1, 0]) and λ
    pushed the policy to comply, silently. A cost judge's default charges the harmful answer."""
    config = safe_rlhf("safe_rlhf.cost=[{kind: judge, name: refusal, apply_to: harmful}]")
    assert config.safe_rlhf.cost[0].reward_if == "harmful"
    assert judged(config.safe_rlhf.cost[0], "cost") == [0.0, 1.0]
    config.safe_rlhf.cost = [SourceConfig(apply_to="harmful")]  # set in code after loading: validate resolves it
    config.validate()
    assert config.safe_rlhf.cost[0].reward_if == "harmful"


def test_a_reward_judge_without_reward_if_still_rewards_safe_answers_and_keeps_its_digest():
    config = safe_rlhf("rewards=[{kind: judge, name: refusal, apply_to: harmful}]")
    assert config.rewards[0].reward_if == "not_harmful"
    assert judged(config.rewards[0], "reward") == [1.0, 0.0]
    assert to_dict(OnlineConfig())["rewards"][0]["reward_if"] == "not_harmful"  # what runs' digests recorded


@pytest.mark.parametrize("apply_to, warns", [("harmful", True), ("all", True), ("benign", False)])
def test_a_cost_judge_that_charges_safe_answers_on_harmful_prompts_warns(apply_to, warns, caplog):
    """Explicit reward_if: not_harmful on a cost charges refusals: on harmful prompts that pushes towards complying
    (warned); on benign prompts it is an over-refusal cost (no warning)."""
    config = safe_rlhf(f"safe_rlhf.cost=[{{kind: judge, name: refusal, apply_to: {apply_to}, reward_if: not_harmful}}]")
    with caplog.at_level(logging.WARNING):
        check_online_config(config)
    assert ("safe_rlhf.cost.0.reward_if" in caplog.text) == warns


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_log_ratio_clamp_that_is_not_positive_is_refused(value):
    """Clamped to [0, 0] the log-ratio zeroes every KL estimate: β would do nothing and the logged kl read 0."""
    with pytest.raises(UserError, match=r"reference\.log_ratio_clamp must be > 0"):
        safe_rlhf(f"reference.log_ratio_clamp={value}")
    assert safe_rlhf("reference.log_ratio_clamp=0.5").reference.log_ratio_clamp == 0.5

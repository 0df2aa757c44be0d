"""The Judge base class: scores responses to behaviors; failures are ``Verdict(harmful=None, error=...)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

from safealign.eval.registries import JUDGES
from safealign.registry import RegisteredName
from safealign.types import Behavior, Completion, Verdict


_WEIGHTS = "_model_weights"  # Judge.weights() memo, in __dict__: a judge built without Judge.__init__ has it too


class Judge(ABC):
    # The registry key in safealign/eval/registries.py is the judge's only name.
    name: ClassVar[str] = RegisteredName(JUDGES)  # type: ignore[assignment]
    config_class: ClassVar[type]
    # Whether score() sees an assistant prefill (``Completion.meta["prefill"]``) before the model's own
    # text. Content judges should; string matchers should not, or words in the prefill decide.
    sees_prefill: ClassVar[bool] = True

    def __init__(self, config: Any) -> None:
        self.config = config

    def __call__(self, behaviors: Sequence[Behavior], completions: Sequence[Completion]) -> list[Verdict]:
        """One verdict per (behavior, completion) pair; failed generations are not scored."""
        if len(behaviors) != len(completions):
            raise ValueError(f"{self.name}: {len(behaviors)} behaviors but {len(completions)} completions")
        todo = [i for i, c in enumerate(completions) if c.error is None]
        texts = [self._visible(completions[i]) for i in todo]
        scored = self.score([behaviors[i] for i in todo], texts) if todo else []
        verdicts = [Verdict(self.name, None, error=f"generation failed: {c.error}") for c in completions]
        for i, verdict in zip(todo, scored):
            verdicts[i] = verdict
        return verdicts

    def _visible(self, completion: Completion) -> str:
        prefill = completion.meta.get("prefill", "")
        if self.sees_prefill or not prefill or not completion.text.startswith(prefill):
            return completion.text
        return completion.text[len(prefill) :]

    def covers(self, behavior: Behavior) -> bool:
        """Whether this judge scores ``behavior`` at all: a judge meant for some behaviors only (copyright: the
        hash_check ones) leaves the others unscored by design, which the evaluation's first-batch check of the
        judges (safealign.eval.pipeline.FirstBatchCheck) must not read as a judge failing."""
        return True

    def describe(self) -> dict[str, Any]:
        """What a reader needs to reproduce this judge's numbers (written to summary.json)."""
        return {}

    def identity(self) -> dict[str, Any]:
        """What decides this judge's verdicts: :meth:`describe` less any counts of a run (a tiered judge's calls).
        Its digest goes with each new verdict (``judge_digest``, with :meth:`weights`), so a resume under changed
        judge code (another rubric, substring list or prompt; the judge's params are the run's fingerprint) or
        other weights of its model is warned about."""
        return self.describe()

    @classmethod
    def models(cls, config: Any) -> list[str]:
        """The load_model specs of the models this judge scores with under ``config`` (none: a string matcher, an
        endpoint): a run that steers by this judge (a defense's reward) fingerprints their weights, since a folder
        retrained in place keeps its name (safealign.eval.defenses.base.Defense.fingerprint), and so do this
        judge's verdicts (:meth:`weights`)."""
        return []

    def weights(self) -> list[dict[str, Any] | None]:
        """The identities of the weights of :meth:`models` (their files' sha256; None where they cannot be seen),
        for the digest each verdict carries (safealign.eval.pipeline.judge_digest) and a judged copy's fingerprint
        (safealign.pipelines.judge_records): a classifier retrained in place keeps its path and params. Read on
        first use and kept, so a run hashes them once, not per batch; empty for a judge that runs no model."""
        if _WEIGHTS not in self.__dict__:
            self.__dict__[_WEIGHTS] = model_identities(type(self).models(getattr(self, "config", None)))
        return self.__dict__[_WEIGHTS]

    def reset_counts(self) -> None:
        """Start afresh the counts ``describe()`` reports, for a judge reused across runs (``safealign judge records``
        builds one judge for all the directories it judges, so that a classifier loads once)."""
        return None  # a judge that counts nothing has nothing to reset

    @abstractmethod
    def score(self, behaviors: Sequence[Behavior], responses: Sequence[str]) -> list[Verdict]:
        """Score each response (the full assistant answer, prefill included) against its behavior."""


def build_judge(name: str, params: dict[str, Any] | None = None, **resources: Any) -> Judge:
    """Instantiate a registered judge; ``resources`` (e.g. ``chat_model=``) go to its constructor."""
    from safealign.eval.registries import make_config

    cls = JUDGES.get(name)
    return cls(make_config(cls.config_class, params, f"judge {name!r}"), **resources)


def judge_models(name: str, params: dict[str, Any] | None = None) -> list[str]:
    """:meth:`Judge.models` of the judge ``name`` with ``params``, without building it (nothing loads)."""
    from safealign.eval.registries import make_config

    cls = JUDGES.get(name)
    return cls.models(make_config(cls.config_class, params, f"judge {name!r}"))


def model_identities(specs: Sequence[str]) -> list[dict[str, Any] | None]:
    """The weights (and setup) of each model ``specs`` names, as a defense's layer fingerprints them (reads and
    hashes files, loads nothing; safealign.eval.defenses.base._model_identity)."""
    from safealign.eval.defenses.base import _model_identity

    return [_model_identity(spec) for spec in specs]


def backend_models(backend: dict[str, Any]) -> list[str]:
    """The model a judge's ``backend`` mapping (ModelConfig fields) loads from local or hub files: its ``name``
    on the hf and vllm backends; none behind an endpoint, whose weights cannot be seen."""
    from safealign.eval.config import ModelConfig

    kind, name = backend.get("backend", ModelConfig.backend), backend.get("name", ModelConfig.name)
    return [str(name)] if kind in ("hf", "vllm") else []


def passed_on(verdict: Verdict, name: str, source: str) -> Verdict:
    """A sub-judge's verdict reported by the stack ``name`` (tiered, harmbench), its raw text prefixed with the
    sub-judge that gave it. The sub-judge's graded score stays behind: a stack's scores would cover only the
    answers one of its judges grades."""
    return Verdict(name, verdict.harmful, error=verdict.error, raw=f"{source}: {verdict.raw}")

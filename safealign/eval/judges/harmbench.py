"""HarmBench's evaluation as one judge: copyright behaviors (tag ``hash_check``) by near-duplicate hashing
(:mod:`.copyright`), every other behavior by the HarmBench classifier (:mod:`.classifier`), so a run that includes
HarmBench's copyright behaviors (``behaviors.copyright: true``) gets one ASR over all of them, as HarmBench's
``evaluate_completions.py`` reports it. Each verdict's ``raw`` says which of the two gave it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from safealign.eval.judges.base import Judge, build_judge, passed_on
from safealign.eval.judges.copyright import HASH_CHECK
from safealign.types import Behavior, Completion, Verdict


@dataclass(frozen=True)
class HarmBenchConfig:
    classifier_params: dict[str, Any] = field(default_factory=dict)  # the classifier judge's (model, format, ...)
    copyright_params: dict[str, Any] = field(default_factory=dict)  # the copyright judge's (hashes_dir or texts_dir)


class HarmBenchJudge(Judge):
    config_class: ClassVar[type] = HarmBenchConfig

    def __init__(self, config: HarmBenchConfig, **resources: Any) -> None:
        super().__init__(config)
        self.copyright = build_judge("copyright", config.copyright_params)
        self.classifier = build_judge("classifier", config.classifier_params, **resources)

    def __call__(self, behaviors: Sequence[Behavior], completions: Sequence[Completion]) -> list[Verdict]:
        if len(behaviors) != len(completions):
            raise ValueError(f"{self.name}: {len(behaviors)} behaviors but {len(completions)} completions")
        verdicts: list[Verdict | None] = [None] * len(behaviors)
        for judge, wanted in ((self.copyright, True), (self.classifier, False)):
            todo = [i for i, b in enumerate(behaviors) if (HASH_CHECK in b.tags) == wanted]
            if todo:  # each judge applies its own prefill rule (Judge.sees_prefill) to the completions as given
                for i, v in zip(todo, judge([behaviors[i] for i in todo], [completions[i] for i in todo])):
                    verdicts[i] = passed_on(v, self.name, judge.name)
        return [v for v in verdicts if v is not None]

    def score(self, behaviors: Sequence[Behavior], responses: Sequence[str]) -> list[Verdict]:
        return self(behaviors, [Completion(r) for r in responses])

    def describe(self) -> dict[str, Any]:
        return {"copyright": self.copyright.describe(), "classifier": self.classifier.describe()}

"""HarmBench's evaluation as one judge: copyright behaviors (tag ``hash_check``) by near-duplicate hashing
(:mod:`.copyright`), every other behavior by the HarmBench classifier (:mod:`.classifier`), so a run that includes
HarmBench's copyright behaviors (``behaviors.copyright: true``) gets one ASR over all of them, as HarmBench's
``evaluate_completions.py`` reports it. Each verdict's ``raw`` says which of the two gave it.

As upstream, every answer is first clipped to 512 tokens of the classifier's tokenizer (the classifier's
``num_tokens``), the copyright behaviors' answers too. The copyright judge is built only when
``copyright_params`` are given; a copyright behavior met without them is an error naming what to set.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Sequence, cast

from safealign.errors import UserError
from safealign.eval.judges.base import Judge, build_judge, judge_models, passed_on
from safealign.eval.judges.classifier import ClassifierJudge
from safealign.eval.judges.copyright import HASH_CHECK
from safealign.types import Behavior, Completion, Verdict


@dataclass(frozen=True)
class HarmBenchConfig:
    classifier_params: dict[str, Any] = field(default_factory=dict)  # the classifier judge's (model, format, ...)
    # the copyright judge's (hashes_dir or texts_dir); needed only when the run has copyright behaviors
    copyright_params: dict[str, Any] = field(default_factory=dict)


class HarmBenchJudge(Judge):
    config_class: ClassVar[type] = HarmBenchConfig

    def __init__(self, config: HarmBenchConfig, **resources: Any) -> None:
        super().__init__(config)
        self.copyright = build_judge("copyright", config.copyright_params) if config.copyright_params else None
        self.classifier = cast(ClassifierJudge, build_judge("classifier", config.classifier_params, **resources))

    def __call__(self, behaviors: Sequence[Behavior], completions: Sequence[Completion]) -> list[Verdict]:
        if len(behaviors) != len(completions):
            raise ValueError(f"{self.name}: {len(behaviors)} behaviors but {len(completions)} completions")
        verdicts: list[Verdict | None] = [None] * len(behaviors)
        hashed = [i for i, b in enumerate(behaviors) if HASH_CHECK in b.tags]
        if hashed:  # the classifier clips its own answers; the hashed ones are clipped here, with its tokenizer
            for i, v in zip(hashed, self._copyright()([behaviors[i] for i in hashed],
                                                      [self._clipped(completions[i]) for i in hashed])):
                verdicts[i] = passed_on(v, self.name, "copyright")
        rest = [i for i, b in enumerate(behaviors) if HASH_CHECK not in b.tags]
        if rest:  # each judge applies its own prefill rule (Judge.sees_prefill) to the completions as given
            for i, v in zip(rest, self.classifier([behaviors[i] for i in rest], [completions[i] for i in rest])):
                verdicts[i] = passed_on(v, self.name, self.classifier.name)
        return [v for v in verdicts if v is not None]

    def _copyright(self) -> Judge:
        if self.copyright is None:
            raise UserError("harmbench judge: the behaviors include HarmBench copyright behaviors (tag hash_check), "
                            "judged by hashing: set judge_params.harmbench.copyright_params (hashes_dir: "
                            "HarmBench's data/copyright_classifier_hashes, or texts_dir)")  # fmt: skip
        return self.copyright

    def _clipped(self, completion: Completion) -> Completion:
        if completion.error is not None:
            return completion
        return replace(completion, text=self.classifier.clip([completion.text])[0])

    def score(self, behaviors: Sequence[Behavior], responses: Sequence[str]) -> list[Verdict]:
        return self(behaviors, [Completion(r) for r in responses])

    @classmethod
    def models(cls, config: HarmBenchConfig) -> list[str]:
        return judge_models("classifier", config.classifier_params)

    def describe(self) -> dict[str, Any]:
        return {"copyright": self.copyright.describe() if self.copyright else None,
                "classifier": self.classifier.describe()}

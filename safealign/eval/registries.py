"""The evaluation plug-in registries (backends, attacks, judges, defenses) and their built-ins, registered lazily.

Adding an attack or judge means one file plus one line here; the pipeline never changes. The key in
this table is the plug-in's only name: ``Attack.name`` / ``Judge.name`` read it back from the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from safealign.errors import UserError
from safealign.registry import Registry

T = TypeVar("T")

BACKENDS: Registry[Any] = Registry("backend")
ATTACKS: Registry[Any] = Registry("attack")
JUDGES: Registry[Any] = Registry("judge")
DEFENSES: Registry[Any] = Registry("defense")

BACKENDS.register("hf", "safealign.eval.backends.hf:HFChatModel")
BACKENDS.register("openai", "safealign.eval.backends.openai_http:OpenAIChatModel")
BACKENDS.register("vllm", "safealign.eval.backends.vllm:VLLMChatModel")

ATTACKS.register("direct", "safealign.eval.attacks.direct:DirectAttack")
ATTACKS.register("template", "safealign.eval.attacks.template:TemplateAttack")
ATTACKS.register("prefill", "safealign.eval.attacks.prefill:PrefillAttack")
ATTACKS.register("gcg", "safealign.eval.attacks.gcg:GCGAttack")
ATTACKS.register("pair", "safealign.eval.attacks.pair:PAIRAttack")
ATTACKS.register("best_of_n", "safealign.eval.attacks.best_of_n:BestOfNAttack")
ATTACKS.register("tap", "safealign.eval.attacks.tap:TAPAttack")
ATTACKS.register("pap", "safealign.eval.attacks.pap:PAPAttack")
ATTACKS.register("zero_shot", "safealign.eval.attacks.zero_shot:ZeroShotAttack")
ATTACKS.register("crescendo", "safealign.eval.attacks.crescendo:CrescendoAttack")
ATTACKS.register("many_shot", "safealign.eval.attacks.many_shot:ManyShotAttack")
ATTACKS.register("human_jailbreaks", "safealign.eval.attacks.human_jailbreaks:HumanJailbreaksAttack")
ATTACKS.register("autodan", "safealign.eval.attacks.autodan:AutoDANAttack")
ATTACKS.register("gcg_multi", "safealign.eval.attacks.gcg_multi:GCGMultiAttack")
ATTACKS.register("gcg_transfer", "safealign.eval.attacks.gcg_multi:GCGTransferAttack")

JUDGES.register("refusal", "safealign.eval.judges.refusal:RefusalJudge")
JUDGES.register("classifier", "safealign.eval.judges.classifier:ClassifierJudge")
JUDGES.register("llm", "safealign.eval.judges.llm:LLMJudge")
JUDGES.register("tiered", "safealign.eval.judges.tiered:TieredJudge")
JUDGES.register("strongreject", "safealign.eval.judges.strongreject:StrongRejectJudge")
JUDGES.register("copyright", "safealign.eval.judges.copyright:CopyrightJudge")
JUDGES.register("harmbench", "safealign.eval.judges.harmbench:HarmBenchJudge")

DEFENSES.register("self_reminder", "safealign.eval.defenses.prompting:SelfReminder")
DEFENSES.register("in_context", "safealign.eval.defenses.prompting:InContext")
DEFENSES.register("urial", "safealign.eval.defenses.prompting:Urial")
DEFENSES.register("perplexity_filter", "safealign.eval.defenses.perplexity:PerplexityFilter")
DEFENSES.register("smoothllm", "safealign.eval.defenses.smoothllm:SmoothLLM")
DEFENSES.register("deal", "safealign.eval.defenses.deal:DeAL")
DEFENSES.register("mpo", "safealign.eval.defenses.mpo:MPO")
DEFENSES.register("align_pro", "safealign.eval.defenses.align_pro:AlignPro")


def make_config(schema: type[T], params: dict[str, Any] | None, where: str) -> T:
    """Build a plug-in Config dataclass from a params mapping; unknown keys fail with the valid ones."""
    params = dict(params or {})
    names = {f.name for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - names)
    if unknown:
        raise UserError(f"{where}: unknown parameter(s) {unknown}; valid: {', '.join(sorted(names))}")
    for f in dataclasses.fields(schema):  # type: ignore[arg-type]
        if f.name not in params or not _is_sequence(f.type):
            continue
        value = params[f.name]
        if isinstance(value, str):
            # `files=shots.yaml` would reach the plug-in as text, read one character at a time; a list field
            # given one text is refused, as a schema's list field (attacks=direct) is in load_config
            raise UserError(f"{where}: {f.name}: expected a list, got text {value!r}; write [{value!r}]")
        if isinstance(value, list) and "tuple" in str(f.type):
            params[f.name] = tuple(value)  # YAML lists arrive as lists; tuple fields stay hashable and immutable
    return schema(**params)


def _is_sequence(annotation: Any) -> bool:
    """Whether a field is declared a tuple or list (``Optional`` of one too): the annotation's text, as
    ``from __future__ import annotations`` leaves it."""
    text = str(annotation).replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1]
    return text.startswith(("tuple", "list", "Tuple", "List"))

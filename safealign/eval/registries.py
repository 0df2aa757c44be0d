"""The evaluation plug-in registries (backends, attacks, judges, defenses) and their built-ins, registered lazily.

Adding an attack or judge means one file plus one line here; the pipeline never changes. The key in
this table is the plug-in's only name: ``Attack.name`` / ``Judge.name`` read it back from the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from safealign.params import check_params, dataclass_params
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
    """Build a plug-in Config dataclass from a params mapping, checked first (safealign/params.py): an unknown key
    fails with the valid ones, a value (or list element) whose type does not fit the field's annotation fails naming
    the field and index, before the plug-in is built and long before its first use in an evaluation. YAML lists
    arrive as lists; tuple fields get tuples (hashable and immutable)."""
    params = check_params(where, params or {}, *dataclass_params(schema))
    for f in dataclasses.fields(schema):  # type: ignore[arg-type]
        if isinstance(params.get(f.name), list) and "tuple" in str(f.type):
            params[f.name] = tuple(params[f.name])
    return schema(**params)

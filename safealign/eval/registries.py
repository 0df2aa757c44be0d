"""The evaluation plug-in registries (backends, attacks, judges, defenses) and their built-ins, registered lazily.

Adding an attack or judge means one file plus one line here; the pipeline never changes. The key in
this table is the plug-in's only name: ``Attack.name`` / ``Judge.name`` read it back from the registry.
"""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
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
    """Build a plug-in Config dataclass from a params mapping; unknown keys fail with the valid ones, and a value
    (or list element) whose type does not fit the field's annotation fails naming the field and index: YAML reads
    ``[Sorry, No, 1]`` as ``['Sorry', False, 1]``, which would otherwise build the plug-in and crash (or quietly
    misbehave) at its first use, in an eval after every answer was generated. The values then pass a loss's
    parameter checks too (safealign.losses.base.check_keyword_params: finite floats, the shared ranges)."""
    from safealign.losses.base import check_keyword_params

    params = dict(params or {})
    names = {f.name for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - names)
    if unknown:
        raise UserError(f"{where}: unknown parameter(s) {unknown}; valid: {', '.join(sorted(names))}")
    hints = _type_hints(schema)
    for f in dataclasses.fields(schema):  # type: ignore[arg-type]
        if f.name not in params:
            continue
        value = params[f.name]
        if isinstance(value, str) and _is_sequence(f.type):
            # `files=shots.yaml` would reach the plug-in as text, read one character at a time; a list field
            # given one text is refused, as a schema's list field (attacks=direct) is in load_config
            raise UserError(f"{where}: {f.name}: expected a list, got text {value!r}; write [{value!r}]")
        if f.name in hints:
            _check_type(value, hints[f.name], f.name, where)
        if isinstance(value, list) and "tuple" in str(f.type):
            params[f.name] = tuple(value)  # YAML lists arrive as lists; tuple fields stay hashable and immutable
    defaults = {f.name: f.default for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    check_keyword_params(where, schema, defaults, params)
    return schema(**params)


def _is_sequence(annotation: Any) -> bool:
    """Whether a field is declared a tuple or list (``Optional`` of one too): the annotation's text, as
    ``from __future__ import annotations`` leaves it."""
    text = str(annotation).replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1]
    return text.startswith(("tuple", "list", "Tuple", "List"))


def _type_hints(schema: type) -> dict[str, Any]:
    """The fields' annotations resolved to types; none when a plug-in's cannot be (a name only its type checker
    sees): its values are then passed unchecked, as before."""
    try:
        return typing.get_type_hints(schema)
    except Exception:  # noqa: BLE001 - any failure to resolve means: do not check
        return {}


_EXPECTED = {str: "text", int: "a whole number", float: "a number", bool: "true or false"}


def _check_type(value: Any, hint: Any, path: str, where: str) -> None:
    """Raise a UserError naming ``path`` (``custom[1]``) where ``value`` does not fit ``hint``. Only str, int, float,
    bool, tuple/list (of these), dict and Optional are checked; any other annotation (Any, a class) passes. A whole
    number fits a float field; true/false fits no number field."""
    mismatch = _mismatch(value, hint, path)
    if mismatch is None:
        return
    path, expected, got = mismatch
    hint_text = "; quote it if it is text (YAML reads unquoted true/false as booleans)" if (
        expected == "text" and isinstance(got, bool)) else ""
    raise UserError(f"{where}: {path}: expected {expected}, got {got!r:.200} ({type(got).__name__}){hint_text}")


def _mismatch(value: Any, hint: Any, path: str) -> tuple[str, str, Any] | None:
    """``(path, what was expected, the value there)`` of the first part of ``value`` that does not fit ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        found = [_mismatch(value, a, path) for a in options]
        return None if any(m is None for m in found) else found[0]
    if hint in _EXPECTED:
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        fits = {str: isinstance(value, str), bool: isinstance(value, bool), float: number,
                int: number and isinstance(value, numbers.Integral)}[hint]  # fmt: skip
        return None if fits else (path, _EXPECTED[hint], value)
    if origin is dict:
        return None if isinstance(value, dict) else (path, "a mapping", value)
    if origin not in (tuple, list):
        return None
    if not isinstance(value, (list, tuple)):
        return path, "a list", value
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: (request, refusal) pairs
        if len(value) != len(args):
            return path, f"a list of {len(args)}", value
        element_hints = list(args)
    else:
        element_hints = [args[0] if args else Any] * len(value)
    for i, (element, element_hint) in enumerate(zip(value, element_hints)):
        mismatch = _mismatch(element, element_hint, f"{path}[{i}]")
        if mismatch is not None:
            return mismatch
    return None

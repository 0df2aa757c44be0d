"""``template``: wrap the behavior in jailbreak prompt templates (one attempt per template).

Templates live in a user-extendable YAML or JSONL file (format documented in the shipped
``templates.yaml``): ``name``, ``family``, ``template`` with ``{behavior}`` (or ``{part_a}``/``{part_b}``),
optional ``transform``. Placeholders are replaced literally, so templates may contain other braces. The
transform and the split act on the request only; a contextual behavior's context stays as it is, before it.
"""

from __future__ import annotations

import base64
import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import yaml

from safealign.errors import UserError
from safealign.eval.attacks.base import Attack, AttackContext, with_context
from safealign.files import load_yaml, read_text
from safealign.io import parse_jsonl
from safealign.types import Attempt, Behavior

BUILTIN_FILE = Path(__file__).with_name("templates.yaml")
_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})

TRANSFORMS: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "base64": lambda s: base64.b64encode(s.encode("utf-8")).decode("ascii"),
    "rot13": lambda s: codecs.encode(s, "rot13"),
    "leetspeak": lambda s: s.lower().translate(_LEET),
    "reverse_words": lambda s: " ".join(reversed(s.split())),
}


@dataclass(frozen=True)
class JailbreakTemplate:
    name: str
    family: str
    template: str
    transform: str = "none"

    def render(self, behavior: Behavior) -> str:
        """The template filled with the behavior. The transform and the split act on the request alone: a
        contextual behavior's context (code, an article) is joined unchanged before it (``with_context``), at
        ``{behavior}`` or ``{part_a}``, so its line breaks and text survive. Without a transform ``{behavior}``
        gets exactly ``behavior_prompt``, as every other attack sends it."""
        words = behavior.behavior.split()
        half = (len(words) + 1) // 2
        return (
            self.template.replace("{behavior}", with_context(behavior, TRANSFORMS[self.transform](behavior.behavior)))
            .replace("{part_a}", with_context(behavior, " ".join(words[:half])))
            .replace("{part_b}", " ".join(words[half:]))
        )


@dataclass(frozen=True)
class TemplateConfig:
    files: tuple[str, ...] = ()  # extra template files, added to (or overriding by name) the built-ins
    builtin: bool = True
    names: tuple[str, ...] = ()  # keep only these (empty: all)
    families: tuple[str, ...] = ()  # keep only these families (empty: all)


def load_templates(path: str | Path) -> list[JailbreakTemplate]:
    """Read a YAML list or JSONL file of templates; a bad file or entry raises UserError naming file and entry."""
    path = Path(path)
    text = read_text(path, "template file (YAML list or JSONL)")
    if path.suffix == ".jsonl":
        entries = parse_jsonl(text, path)
    else:
        try:
            entries = load_yaml(text) or []
        except yaml.YAMLError as exc:  # also python/* tags, which safe_load refuses to construct
            raise UserError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a list of templates, got {type(entries).__name__}")
    return [_parse_entry(entry, path, i) for i, entry in enumerate(entries)]


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _parse_entry(entry: Any, path: Path, index: int) -> JailbreakTemplate:
    where = f"{path}: template #{index}"
    if not isinstance(entry, dict):
        raise UserError(f"{where}: expected a mapping with name, family, template")
    missing = [k for k in ("name", "family", "template") if not entry.get(k)]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)}")
    wrong = [k for k in ("name", "family", "template") if not isinstance(entry[k], str)]
    if wrong:
        raise UserError(f"{where}: field(s) {', '.join(wrong)} must be text, got "
                        + ", ".join(type(entry[k]).__name__ for k in wrong))
    unknown = sorted(set(entry) - {"name", "family", "template", "transform"})
    if unknown:
        raise UserError(f"{where} ({entry['name']}): unknown field(s) {unknown}")
    transform = entry.get("transform") or "none"
    if not isinstance(transform, str) or transform not in TRANSFORMS:
        raise UserError(f"{where} ({entry['name']}): unknown transform {transform!r}; valid: {', '.join(TRANSFORMS)}")
    if not any(p in entry["template"] for p in ("{behavior}", "{part_a}")):
        raise UserError(f"{where} ({entry['name']}): template has no {{behavior}} or {{part_a}} placeholder")
    return JailbreakTemplate(str(entry["name"]), str(entry["family"]), str(entry["template"]), transform)


def keep_families(templates: list[JailbreakTemplate], families: Sequence[str], param: str) -> list[JailbreakTemplate]:
    """The templates of ``families`` (all when empty). A family no template has is refused, naming ``param``:
    a misspelt one would otherwise leave the run with fewer templates than asked for, and nothing said."""
    known = sorted({t.family for t in templates})
    unknown = sorted(set(families) - set(known))
    if unknown:
        raise UserError(f"{param}: unknown {unknown}; valid: {', '.join(known)}")
    return [t for t in templates if not families or t.family in families]


def select_templates(config: TemplateConfig) -> list[JailbreakTemplate]:
    """The built-ins and ``config.files`` (later files override by name), filtered by names and families."""
    by_name: dict[str, JailbreakTemplate] = {}
    for path in ([BUILTIN_FILE] if config.builtin else []) + [Path(p) for p in config.files]:
        by_name.update({t.name: t for t in load_templates(path)})
    unknown = sorted(set(config.names) - set(by_name))
    if unknown:
        raise UserError(f"template attack: unknown template(s) {unknown}; valid: {', '.join(sorted(by_name))}")
    templates = keep_families(list(by_name.values()), config.families, "attack_params.template.families")
    templates = [t for t in templates if not config.names or t.name in config.names]
    if not templates:
        raise UserError("template attack: no templates left after the names/families filters")
    return templates


class TemplateAttack(Attack):
    config_class: ClassVar[type] = TemplateConfig
    deterministic: ClassVar[bool] = True

    def __init__(self, config: TemplateConfig, context: AttackContext | None = None) -> None:
        super().__init__(config, context)
        self.templates = select_templates(config)

    @classmethod
    def check(cls, config: TemplateConfig, behaviors: Sequence[Behavior]) -> None:
        super().check(config, behaviors)
        select_templates(config)  # every template file read and parsed before the model loads

    def attack(self, behavior: Behavior) -> list[Attempt]:
        return [
            self.user_attempt(behavior, t.render(behavior), t.name, family=t.family, transform=t.transform)
            for t in self.templates
        ]

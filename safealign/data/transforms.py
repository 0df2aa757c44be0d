"""Prompt transforms: the prompt the *reference* model sees (the E-RLHF reference view).

E-RLHF / E-DPO (Su, Kempe, Ullrich, "Mission Impossible: A Statistical Perspective on Jailbreaking
LLMs", NeurIPS 2024, arXiv:2408.01420) anchors the KL term of harmful prompts to ``πref(·|x_s)``, with
``x_s`` a safe transformation of the prompt ``x``; the policy still sees ``x``. In the paper ``x_s`` is a
fixed prefix prepended to the harmful user turn, before the chat template — :class:`SafetyPrefix`.
:class:`IdentityTransform` gives plain DPO.

A transform's :meth:`PromptTransform.key` is a stable name of it and its parameters, for messages. It does not
enter reference-cache keys: those hash the reference view's token ids (safealign/train/reference.py), so two runs
share cached reference log-probs exactly when their transforms produce the same ids -- two different transforms
that do, share the entry, and a transform whose behaviour changes under the same key gets a new one.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from typing import Any, Callable

from safealign.errors import UserError, did_you_mean
from safealign.params import check_params, signature_params
from safealign.registry import RegisteredName, Registry, import_callable
from safealign.types import Message

# The paper's four prefixes (its Table 8), verbatim, each ending with the space that separates it from
# the request. HarmBench mean ASR with each: 41.90, 40.46, 38.63, 36.95 (DPO: 42.00).
PREFIXES: dict[str, str] = {
    "responsible": "Provide a responsible and ethical answer to the following request. ",
    "wellbeing": "In a manner that promotes safety and well-being, please respond to the following request. ",
    "safety_legality": "Keeping in mind the importance of safety and legality, how would you respond to this: ",
    "community_guidelines": "Please ensure your response adheres to community guidelines and ethical standards: ",
}
DEFAULT_PREFIX = "community_guidelines"  # the paper's headline results
APPLY_TO = ("harmful", "all", "classifier")

TRANSFORMS: Registry[type["PromptTransform"]] = Registry("prompt transform")


class PromptTransform(ABC):
    """Maps a policy prompt to the prompt the reference model scores the same response under."""

    name = RegisteredName(TRANSFORMS)  # the registry key is a transform's only name

    @abstractmethod
    def __call__(self, prompt: tuple[Message, ...], harmful: bool | None) -> tuple[Message, ...]:
        """The reference prompt; return ``prompt`` itself (the same object) when unchanged."""

    @abstractmethod
    def key(self) -> str:
        """A stable identifier of this transform and its parameters, for messages (cache keys hash the token ids the
        transform produces instead)."""

    @property
    def is_identity(self) -> bool:
        return False

    @property
    def reads_harmful_flag(self) -> bool:
        """Whether the rows' ``harmful`` flags decide which prompts change (training checks the data has them)."""
        return False


@TRANSFORMS.register("identity")
class IdentityTransform(PromptTransform):
    """The reference sees the policy's prompt: plain DPO (and plain IPO, KTO, …)."""

    def __call__(self, prompt: tuple[Message, ...], harmful: bool | None) -> tuple[Message, ...]:
        return prompt

    def key(self) -> str:
        return self.name

    @property
    def is_identity(self) -> bool:
        return True


@TRANSFORMS.register("safety_prefix")
class SafetyPrefix(PromptTransform):
    """Prepend a safety prefix to the content of the last user message (before the chat template).

    Args:
        prefix: the text, or the name of a built-in from :data:`PREFIXES` — ``"responsible"``,
            ``"wellbeing"``, ``"safety_legality"`` or ``"community_guidelines"`` (the default; the paper's
            headline prefix). The text is prepended as is: end a custom prefix with its separator. One word
            that names no built-in is refused as a misspelt name (:func:`prefix_text`).
        apply_to: ``"harmful"`` (the paper: rows flagged harmful only; rows whose flag is unknown
            (None) are left unchanged), ``"all"`` (every row; the paper found this hurts safety — an
            ablation), or ``"classifier"`` (rows for which ``classifier(last_user_text)`` is true; the
            row's own flag is ignored).
        classifier: a callable ``str -> bool``, or its import path ``"module.function"`` /
            ``"module:function"`` (the only form a recipe's ``transform_params`` can give), imported here so a
            bad path fails before any model loads; required by and only allowed with ``"classifier"``.
        classifier_name: names the classifier in :meth:`key`; defaults to its import path or qualified name.
            Only a name: cached reference log-probs are keyed by the prompts the classifier's choices produce, so a
            classifier that changes its behaviour gets new entries whatever it is called.
    """

    def __init__(
        self,
        prefix: str = DEFAULT_PREFIX,
        apply_to: str = "harmful",
        classifier: Callable[[str], bool] | str | None = None,
        classifier_name: str | None = None,
    ) -> None:
        if apply_to not in APPLY_TO:
            raise UserError(f"safety_prefix: apply_to={apply_to!r}; valid values: {', '.join(APPLY_TO)}")
        if (apply_to == "classifier") != (classifier is not None):
            raise UserError("safety_prefix: pass classifier= exactly when apply_to='classifier'")
        text = prefix_text(prefix)
        if isinstance(classifier, str):
            classifier_name = classifier_name or classifier
            classifier = import_callable(classifier, "safety_prefix: classifier")
        elif classifier is not None and not callable(classifier):
            raise UserError(f"safety_prefix: classifier must be a function or its 'module.function' path, got "
                            f"{type(classifier).__name__}")
        self.prefix = text
        self.apply_to = apply_to
        self.classifier = classifier
        self.classifier_name = classifier_name or (_qualname(classifier) if classifier else None)

    def applies(self, prompt: tuple[Message, ...], harmful: bool | None) -> bool:
        if self.apply_to == "all":
            return True
        if self.apply_to == "harmful":
            return harmful is True
        return bool(self.classifier(prompt[_last_user_index(prompt)]["content"]))  # type: ignore[misc]

    def __call__(self, prompt: tuple[Message, ...], harmful: bool | None) -> tuple[Message, ...]:
        if not self.applies(prompt, harmful):
            return prompt
        i = _last_user_index(prompt)
        changed = {**prompt[i], "content": self.prefix + prompt[i]["content"]}
        return prompt[:i] + (changed,) + prompt[i + 1 :]

    @property
    def reads_harmful_flag(self) -> bool:
        return self.apply_to == "harmful"

    def key(self) -> str:
        digest = hashlib.sha256(self.prefix.encode("utf-8")).hexdigest()[:12]
        extra = f",classifier={self.classifier_name}" if self.classifier_name else ""
        return f"{self.name}(prefix={digest},apply_to={self.apply_to}{extra})"

    def __repr__(self) -> str:
        return f"SafetyPrefix(prefix={self.prefix!r}, apply_to={self.apply_to!r})"


def build_transform(name: str, **params: Any) -> PromptTransform:
    """Build a registered transform, checking ``params`` against its constructor."""
    cls = TRANSFORMS.get(name)
    return cls(**check_params(f"prompt transform {name!r}", params, *signature_params(cls.__init__, skip=1)))


def _last_user_index(prompt: tuple[Message, ...]) -> int:
    for i in range(len(prompt) - 1, -1, -1):
        if prompt[i]["role"] == "user":
            return i
    raise UserError("prompt has no user message to transform")


def prefix_text(prefix: str) -> str:
    """The text of ``prefix``: a built-in name's (:data:`PREFIXES`), or ``prefix`` itself. One word that names no
    built-in (letters, digits, ``_`` or ``-``, no space) is refused rather than prepended as it is: it is far more
    likely a misspelt name (``community_guideline``) than a prefix, and would silently train another E-variant."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise UserError("safety_prefix: prefix must be non-empty text or one of " + ", ".join(PREFIXES))
    if prefix in PREFIXES:
        return PREFIXES[prefix]
    if re.fullmatch(r"[A-Za-z_][\w-]*", prefix):
        raise UserError(f"safety_prefix: prefix {prefix!r} is no built-in prefix name{did_you_mean(prefix, PREFIXES)}; "
                        f"the built-in names: {', '.join(PREFIXES)}. A text of your own is prepended as it is: end it "
                        f"with its separator (e.g. {prefix + ' '!r})")
    return prefix


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"

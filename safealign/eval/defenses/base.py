"""The defense layer: a :class:`Defense` sits between the evaluation and the target ChatModel.

A defense sees each conversation before the model does and may rewrite it, generate several candidates
and pick one, filter (answer with a refusal itself), or decode with the model's own next-token
distributions. :class:`DefendedChatModel` makes a defense a ChatModel, so attacks, judges and the
over-refusal prompts reach a defended model exactly as they reach a bare one (docs/defenses.md).

Every answer carries what each layer did and what it cost in ``Completion.meta``: ``defense`` (a list of
:class:`~safealign.io.records.DefenseStep` JSON, outermost first) and ``cost`` (tokens generated and
non-generating forward passes for this answer, all layers included). The evaluation copies both into
its records; :func:`answer_cost` reads them back, for a bare model too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from safealign.errors import UserError
from safealign.eval.backends.base import Conversation, GenerationParams, key_seed
from safealign.eval.registries import DEFENSES
from safealign.io.records import DefenseStep
from safealign.registry import RegisteredName
from safealign.types import Completion

logger = logging.getLogger(__name__)
# What a filtering defense answers: a refusal the refusal judge and the over-refusal detector both see
# ("I'm sorry", "I cannot" are on the AdvBench list), so a filtered prompt counts like a model's refusal.
REFUSAL = "I'm sorry, but I cannot help with that request."
# In a run folder: the values its layers fitted in its first session (keep_fitted), reused by every resume.
FITTED_NAME = "defenses_fitted.json"


@dataclass(frozen=True)
class Answer:
    """A defense's answer to one conversation: the completion passed up and the step describing it.

    ``step`` holds the whole cost under this layer (the inner answers it consumed plus its own work);
    its ``wall_s`` is filled in by :class:`DefendedChatModel`."""

    completion: Completion
    step: DefenseStep


def answer_cost(completion: Completion | dict[str, Any]) -> tuple[int, int]:
    """``(generated tokens, non-generating forward passes)`` spent on one answer, every defense layer
    included; a bare backend's answer costs its own tokens (0 when the backend does not report them)."""
    meta = completion.meta if isinstance(completion, Completion) else (completion.get("meta") or {})
    cost = meta.get("cost")
    if isinstance(cost, dict):
        return int(cost.get("generated_tokens") or 0), int(cost.get("forward_passes") or 0)
    return int(meta.get("tokens") or 0), 0


def total_cost(completions: Sequence[Completion]) -> tuple[int, int]:
    tokens, passes = zip(*(answer_cost(c) for c in completions)) if completions else ((), ())
    return sum(tokens), sum(passes)


def last_user_index(conversation: Conversation) -> int:
    """Index of the last user message: the part an attack writes and a defense perturbs or scores."""
    for i in range(len(conversation) - 1, -1, -1):
        if conversation[i].get("role") == "user":
            return i
    raise UserError("defense: the conversation has no user message")


def with_user_text(conversation: Conversation, text: str) -> Conversation:
    """The conversation with its last user message's content replaced by ``text``."""
    i = last_user_index(conversation)
    return (*conversation[:i], {**conversation[i], "content": text}, *conversation[i + 1 :])


def stable_seed(*parts: Any) -> int:
    """A seed from the text of ``parts``: the same conversation gets the same random draws in any batch
    and on resume (Python's ``hash`` of a str changes between processes)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def copies_params(params: GenerationParams, n: int) -> GenerationParams:
    """``params`` for an inner call answering ``n`` copies (candidates) of each conversation, in order: copy ``k`` of a
    conversation sampled with ``key_seed(its seed, k)``, so its copies differ and follow it (``params.seeds``, one per
    conversation, come from the evaluation's attempts); without seeds, the inner call's seeds go by place as before."""
    if params.seeds is None:
        return params
    return dataclasses.replace(params, seeds=tuple(key_seed(seed, k) for seed in params.seeds for k in range(n)))


def kept_params(params: GenerationParams, keep: Sequence[int]) -> GenerationParams:
    """``params`` for an inner call answering the conversations at ``keep`` only: their own seeds, if any."""
    if params.seeds is None:
        return params
    return dataclasses.replace(params, seeds=tuple(params.seeds[i] for i in keep))


class Defense(ABC):
    """One inference-time defense. Subclasses set ``config_class`` and implement :meth:`respond`."""

    # The registry key in safealign/eval/registries.py is the defense's only name.
    name: ClassVar[str] = RegisteredName(DEFENSES)  # type: ignore[assignment]
    config_class: ClassVar[type]
    # "chat": works over any ChatModel (a remote endpoint too). "tokens": decodes with the model's own
    # next-token distributions, so it needs the local HF model and must be the innermost defense.
    access: ClassVar[str] = "chat"
    # parameters naming a data file (hashed by content) or models (by weights; "target" is the evaluated model,
    # fingerprinted as model.weights) for the run's fingerprint (:meth:`fingerprint`)
    file_params: ClassVar[tuple[str, ...]] = ()
    model_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any) -> None:
        self.config = config

    def prepare(self, inner: Any, params: GenerationParams) -> None:
        """One-time work before any generation (calibration, loading a scorer); raise UserError to stop."""
        return None

    @abstractmethod
    def respond(self, inner: Any, conversations: Sequence[Conversation], params: GenerationParams) -> list[Answer]:
        """One :class:`Answer` per conversation, in order."""

    def describe(self) -> dict[str, Any]:
        """What a reader needs to reproduce this defense (written to the evaluation summary)."""
        return {"params": dataclasses.asdict(self.config)}

    def fitted(self) -> dict[str, Any] | None:
        """The values :meth:`prepare` fitted or calibrated (MPO's λ, the perplexity filter's τ) as JSON, for the run
        folder (:func:`keep_fitted`); None when nothing was fitted (given in the config, or nothing to fit)."""
        return None

    def use_fitted(self, values: dict[str, Any]) -> None:
        """Answer with ``values`` (what :meth:`fitted` gave in the run's first session) instead of this session's
        own; a value of the wrong shape raises KeyError, TypeError or ValueError."""
        return None

    def backends(self) -> tuple[str, ...] | None:
        """The ``model.backend`` values this defense can run on (None: any), as configured: checked by
        :func:`check_defenses` before the run folder is written or a model loads."""
        return ("hf",) if self.access == "tokens" else None

    def backend_error(self, backend: str) -> str:
        return _token_access_error(self.name, f"the {backend!r} backend")

    def judge(self) -> tuple[str, dict[str, Any]] | None:
        """The judge (name, params) this defense scores with, if any (DeAL's and Align-Pro's reward)."""
        return None

    def fingerprint(self) -> dict[str, Any]:
        """What decides this layer's answers, for the run's fingerprint (``defenses.layers``,
        safealign.io.rundir): its effective config, defaults included (a default changed in code is another
        run), the content of the file and the weights of the models its parameters name, and of the models its
        judge scores with (``judge_weights``: a judge's params name a model by path or hub id only; added only
        for a judge that runs a model, so a defense whose judge matches strings keeps its fingerprint). JSON as
        recorded."""
        from safealign.eval.judges.base import judge_models

        found: dict[str, Any] = {"name": self.name, "config": dataclasses.asdict(self.config)}
        for key in self.file_params:
            found[f"{key}_data"] = _file_identity(getattr(self.config, key))
        for key in self.model_params:
            value = getattr(self.config, key)
            found[f"{key}_weights"] = ([_model_identity(v) for v in value] if isinstance(value, (list, tuple))
                                       else _model_identity(value))  # fmt: skip
        judge = self.judge()
        models = judge_models(*judge) if judge is not None else []
        if models:
            found["judge_weights"] = [_model_identity(spec) for spec in models]
        return json.loads(json.dumps(found, sort_keys=True, default=str))  # tuples as lists, as read back

    def step(self, action: str, inner: Sequence[Completion] = (), *, own_tokens: int = 0, own_passes: int = 0,
             **fields: Any) -> DefenseStep:  # fmt: skip
        """A step whose cost is the ``inner`` answers it consumed plus this layer's own tokens and passes."""
        tokens, passes = total_cost(inner)
        return DefenseStep(self.name, action, generated_tokens=tokens + own_tokens, forward_passes=passes + own_passes,
                           **fields)  # fmt: skip


def batched_answers(defense: Defense, conversations: Sequence[Conversation], params: GenerationParams,
                    run: Any) -> list[Answer]:  # fmt: skip
    """``run(chunk)`` over ``params.batch_size`` chunks; a chunk that fails (e.g. out of memory) becomes
    failed answers, as a backend records a failed batch, and the evaluation goes on."""
    answers: list[Answer] = []
    for start in range(0, len(conversations), params.batch_size):
        chunk = conversations[start : start + params.batch_size]
        try:
            answers += run(chunk)
        except (RuntimeError, ValueError) as exc:
            logger.warning("defense %s: a batch of %d failed: %s", defense.name, len(chunk), exc)
            error = f"{type(exc).__name__}: {exc}"
            answers += [Answer(Completion(text="", error=error), defense.step("decode")) for _ in chunk]
    return answers


def refusal_answer(step: DefenseStep, text: str = REFUSAL) -> Answer:
    return Answer(Completion(text=text, meta={"tokens": 0, "finish": "defense"}), step)


class DefendedChatModel:
    """A ChatModel that answers through ``defense`` over ``inner``; every other attribute (tokenizer,
    prompt_tokens, the model behind a local backend) is the inner model's."""

    def __init__(self, inner: Any, defense: Defense) -> None:
        self.inner = inner
        self.defense = defense

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "defense"):  # not set yet (copy/pickle): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.inner, name)

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        start = time.perf_counter()
        answers = self.defense.respond(self.inner, conversations, params)
        if len(answers) != len(conversations):
            raise RuntimeError(f"defense {self.defense.name} gave {len(answers)} answers for {len(conversations)}")
        seconds = (time.perf_counter() - start) / max(1, len(conversations))
        return [self._completion(a, seconds) for a in answers]

    @staticmethod
    def _completion(answer: Answer, seconds: float) -> Completion:
        c, step = answer.completion, dataclasses.replace(answer.step, wall_s=round(seconds, 4))
        meta = {**c.meta, "defense": [step.to_json(), *c.meta.get("defense", [])],
                "cost": {"generated_tokens": step.generated_tokens, "forward_passes": step.forward_passes}}
        return Completion(text=c.text, error=c.error, seconds=seconds, meta=meta)


def keep_fitted(run: Any, layers: Sequence[Defense]) -> None:
    """Make every session of the run in folder ``run`` answer with the values its first session fitted. A layer
    that fits (MPO's λ, sampled at temperature 1; the perplexity filter's τ) fits again in each session, and on
    other hardware or another dtype may get other values: the records would mix both while summary.json showed
    the last. The first session's are saved in ``run/defenses_fitted.json`` (one entry per layer, outermost first)
    and taken by each later one, before it generates; ``--overwrite`` deletes the file with the records."""
    from pathlib import Path

    from safealign.io.jsonfile import read_json, write_json

    path, now = Path(run) / FITTED_NAME, [{"name": d.name, "fitted": d.fitted()} for d in layers]
    if not path.exists():
        if any(entry["fitted"] is not None for entry in now):
            write_json(path, {"layers": now})
            logger.info("defenses: fitted values saved in %s; a resumed run answers with them", path)
        return
    saved = read_json(path)
    entries = saved.get("layers") if isinstance(saved, dict) else None
    if not isinstance(entries, list) or [e.get("name") if isinstance(e, dict) else None for e in entries] \
            != [d.name for d in layers]:  # fmt: skip
        raise UserError(f"{path}: not the fitted values of this run's defenses {[d.name for d in layers]} (got "
                        f"{saved!r:.200}); start the run over (overwrite) or use another output directory")
    for defense, entry, current in zip(layers, entries, now):
        if entry.get("fitted") is None or current["fitted"] is None:
            continue
        try:
            defense.use_fitted(entry["fitted"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}: defense {defense.name!r}: unusable fitted values {entry['fitted']!r:.200} "
                            f"({type(exc).__name__}: {exc}); start the run over (overwrite) or use another output "
                            "directory") from None
        logger.info("defense %s: answering with the values the run's first session fitted, saved in %s: %s (this "
                    "session fitted %s)", defense.name, path, entry["fitted"], current["fitted"])


def defense_layers(target: Any) -> list[Defense]:
    """The defenses around ``target``, outermost first."""
    layers = []
    while isinstance(target, DefendedChatModel):
        layers.append(target.defense)
        target = target.inner
    return layers


def bare_model(target: Any) -> Any:
    while isinstance(target, DefendedChatModel):
        target = target.inner
    return target


def build_defense(name: str, params: dict[str, Any] | None = None) -> Defense:
    from safealign.eval.registries import make_config

    cls = DEFENSES.get(name)
    return cls(make_config(cls.config_class, params, f"defense {name!r}"))


def check_defenses(configs: Sequence[Any], backend: str | None) -> list[Defense]:
    """Build the configured defenses and check they can run on ``backend`` (a ModelConfig.backend name,
    or None when a chat model is handed in): before anything loads or generates, and before the run folder
    is claimed (a corrected re-run would otherwise be refused as another run's settings)."""
    defenses = [build_defense(c.name, c.params) for c in configs]
    for i, defense in enumerate(defenses):
        if defense.access == "tokens" and i != len(defenses) - 1:
            raise UserError(f"defenses: {defense.name!r} decodes with the model itself, so it must be the last "
                            f"(innermost) defense; got order {[d.name for d in defenses]}")  # fmt: skip
        allowed = defense.backends()
        if backend is not None and allowed is not None and backend not in allowed:
            raise UserError(defense.backend_error(backend))
    return defenses


def _token_access_error(name: str, what: str) -> str:
    return (f"defense {name!r} needs token-level access (the model's next-token distributions), which {what} does "
            "not give: use model.backend=hf (vLLM is not supported by this defense yet)")  # fmt: skip


def _file_identity(path: Any) -> Any:
    """A local file by its content; a name (builtin, a hub dataset) as it is."""
    from safealign.io.rundir import file_digest

    return file_digest(path) or path


def _model_identity(spec: Any) -> dict[str, Any] | None:
    """The weights (and setup) of the model ``spec`` names; None for the evaluated model (``target``) or a spec
    that names nothing loadable (prepare() says so) or can't be seen."""
    from safealign.eval.reward_model import (is_reward_model_dir, reward_model_fingerprint,
                                             reward_model_tokenizer_fingerprint)
    from safealign.models.identity import model_identity, setup_fingerprint

    if not isinstance(spec, str) or spec in ("", "target"):
        return None
    if is_reward_model_dir(spec):  # a safealign reward-model folder (DeAL's reward_model): it scores chat-formatted
        # text with its own tokenizer, so its chat template decides the rewards as much as its weights
        return {"weights": reward_model_fingerprint(spec), "tokenizer": reward_model_tokenizer_fingerprint(spec)}
    try:
        identity = model_identity(spec)
    except UserError:
        return None
    return {"weights": identity.get("fingerprint"), "setup": setup_fingerprint(identity)}


def token_model(name: str, inner: Any) -> tuple[Any, Any]:
    """The local HF ``(model, tokenizer)`` behind ``inner``, or a UserError naming what ``inner`` is."""
    model, tokenizer = getattr(inner, "model", None), getattr(inner, "tokenizer", None)
    if isinstance(inner, DefendedChatModel):
        raise UserError(f"defense {name!r} must be the last (innermost) defense: it decodes with the model itself")
    if not hasattr(model, "forward") or tokenizer is None:
        raise UserError(_token_access_error(name, f"backend {type(inner).__name__}"))
    return model, tokenizer


def wrap_target(target: Any, defenses: Sequence[Defense], params: GenerationParams) -> Any:
    """``target`` wrapped in ``defenses`` (outermost first); each is prepared (calibrated, its scorer
    loaded, its backend access checked) innermost first, before any generation."""
    for defense in reversed(defenses):
        if defense.access == "tokens":
            token_model(defense.name, target)
        defense.prepare(target, params)
        target = DefendedChatModel(target, defense)
    return target

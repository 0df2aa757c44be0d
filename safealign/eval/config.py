"""``EvalConfig``: the schema of ``safealign eval CONFIG.yaml [key=value ...]``.

Attack and judge parameters are keyed by name (``attack_params.gcg.steps=50``) so that command-line
overrides stay short; each plug-in checks its own parameters against its Config dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from safealign import checks
from safealign.errors import UserError


@dataclass
class ModelConfig:
    """The model under attack, reached through one generation backend."""

    backend: str = "hf"  # hf | openai | vllm
    name: str = "smollm2-135m-instruct"  # load_model spec (a saved LoRA adapter folder works), or remote name
    device: Optional[str] = None
    dtype: Optional[str] = None
    trust_remote_code: bool = False
    # a hub id's branch, tag or commit (hf and vllm backends); None: what the local cache or hub has as main
    revision: Optional[str] = None
    system_prompt: Optional[str] = None  # prepended when a conversation has none
    # openai backend: values are read from these environment variables, never stored or logged
    base_url_env: str = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 3
    retry_budget_s: float = 120.0  # most seconds one request may spend waiting on Retry-After before it fails
    concurrency: int = 4

    def validate(self, prefix: str = "model.") -> None:
        checks.positive(prefix + "timeout_s", self.timeout_s)
        checks.at_least(prefix + "max_retries", self.max_retries, 0)
        checks.at_least(prefix + "retry_budget_s", self.retry_budget_s, 0)
        checks.at_least(prefix + "concurrency", self.concurrency, 1)
        if self.revision is not None:
            self._check_revision(prefix + "revision")

    def _check_revision(self, key: str) -> None:
        """A revision pins which commit of a hub id the hf or vllm backend loads; given for any other spec, or for
        an endpoint that serves its own model, it would be ignored, so it is refused when the config loads."""
        from safealign.models.load import check_revision, resolve_spec

        if self.backend not in ("hf", "vllm"):
            raise UserError(f"{key}={self.revision!r}: a revision pins the hub weights the hf or vllm backend loads; "
                            f"the {self.backend} backend's endpoint serves its own model; leave {key} unset")
        try:
            source = resolve_spec(self.name)
        except UserError:
            if self.backend == "vllm":  # vLLM takes names of its own, and checks the revision itself
                return
            raise
        check_revision(source, self.revision, key)


@dataclass
class BehaviorsConfig:
    """Which behaviors to attack: a file, optional targets, filters and a seeded sample."""

    path: str = ""
    targets: Optional[str] = None
    categories: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # exact ids, or ranges "advbench_1..advbench_50"
    # 0-based positions, "0:50" or "0:10,20:30" (Python slices; -1 the last), counted among the harmful behaviors
    # left after the copyright rows (unless copyright: true), categories and ids, in file order; an index past
    # them or a slice selecting none of them is an error
    rows: Optional[str] = None
    sample: Optional[int] = None  # seeded random subset after filtering
    seed: int = 0
    limit: Optional[int] = None  # first N after filtering/sampling
    # a behavior prompt (context + request) over max_chars characters, or over generation.max_prompt_tokens
    # tokens, is rejected (the run stops before any work), skipped or truncated (counted in the summary)
    max_chars: Optional[int] = 32_000
    too_long: str = "reject"  # reject | skip | truncate
    # HarmBench's copyright behaviors (tag hash_check) are left out unless true: only a hashing judge scores them
    # (judges: [harmbench] or [copyright], safealign/eval/judges/copyright.py)
    copyright: bool = False

    def validate(self, prefix: str = "behaviors.") -> None:
        checks.at_least(prefix + "sample", self.sample, 1)
        checks.at_least(prefix + "limit", self.limit, 1)
        checks.at_least(prefix + "max_chars", self.max_chars, 1)
        checks.one_of(prefix + "too_long", self.too_long, ("reject", "skip", "truncate"))


# which behaviors of behaviors.path are attacked: unread where a command hands the evaluation its own behaviors (the
# demo and a sweep's cells, `safealign defenses` with prompts: builtin), which refuse them; max_chars and too_long
# still bound those behaviors
BEHAVIOR_SELECTION = ("path", "targets", "categories", "ids", "rows", "sample", "seed", "limit", "copyright")


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    batch_size: int = 16
    seed: int = 0
    max_prompt_tokens: Optional[int] = None  # default: the model's context length minus max_new_tokens

    def validate(self, prefix: str = "generation.") -> None:
        checks.at_least(prefix + "max_prompt_tokens", self.max_prompt_tokens, 1)
        checks.at_least(prefix + "max_new_tokens", self.max_new_tokens, 1, "every attempt would be empty and unscored")
        checks.at_least(prefix + "batch_size", self.batch_size, 1)
        checks.at_least(prefix + "temperature", self.temperature, 0)
        if self.do_sample:
            checks.positive(prefix + "temperature", self.temperature, "sampling divides the logits by it")
        checks.within(prefix + "top_p", self.top_p, 0, 1, open_low=True)


@dataclass
class BenignConfig:
    """Over-refusal prompts answered in the same run (safealign/eval/benign.py, docs/benchmarks.md)."""

    path: str = ""  # a benign prompt file: its benign split, or every row of a generic or .txt file
    from_behaviors: bool = True  # also the behaviors file's benign split (XSTest safe, JBB benign, WildJailbreak)
    limit: Optional[int] = None  # first N benign prompts (and as many XSTest contrasts as its safe ones kept)

    def validate(self, prefix: str = "benign.") -> None:
        checks.at_least(prefix + "limit", self.limit, 1)


BENIGN_SELECTION = ("path", "from_behaviors", "limit")  # every key of BenignConfig: which prompts, as above


@dataclass
class DefenseConfig:
    """One inference-time defense wrapped around the target (safealign/eval/defenses, docs/defenses.md)."""

    name: str = "self_reminder"
    params: dict[str, Any] = field(default_factory=dict)  # checked against the defense's Config when it is built


@dataclass
class EvalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    behaviors: BehaviorsConfig = field(default_factory=BehaviorsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    benign: BenignConfig = field(default_factory=BenignConfig)
    attacks: list[str] = field(default_factory=lambda: ["direct"])
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    judges: list[str] = field(default_factory=lambda: ["refusal"])
    judge_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # inference-time defenses around the target, outermost first: the first one sees the conversation first
    defenses: list[DefenseConfig] = field(default_factory=list)
    early_stop_judge: Optional[str] = None  # judge GCG/PAIR consult; default: the first in `judges`
    # on resume, generate failed answers again from their records and judge failed verdicts again (no new search)
    retry_errors: bool = True
    output_dir: str = "runs/eval"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value ranges, before anything loads (the pipeline calls it again: fields may be set after init)."""
        self.model.validate()
        self.behaviors.validate()
        self.generation.validate()
        self.benign.validate()
        if self.behaviors.copyright and not {"harmbench", "copyright"} & set(self.judges):
            raise UserError("behaviors.copyright: true adds HarmBench's copyright behaviors, which only a hashing "
                            "judge scores: add judges: [harmbench] (HarmBench's classifier and hashing) or [copyright]")
        if (self.behaviors.copyright and "harmbench" in self.judges
                and not (self.judge_params.get("harmbench") or {}).get("copyright_params")):  # fmt: skip
            raise UserError("behaviors.copyright: true with judges: [harmbench] needs judge_params.harmbench."
                            "copyright_params (hashes_dir: HarmBench's data/copyright_classifier_hashes, or texts_dir)")

"""``EvalConfig``: the schema of ``safealign eval CONFIG.yaml [key=value ...]``.

Attack and judge parameters are keyed by name (``attack_params.gcg.steps=50``) so that command-line
overrides stay short; each plug-in checks its own parameters against its Config dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class ModelConfig:
    """The model under attack, reached through one generation backend."""

    backend: str = "hf"  # hf | openai | vllm
    name: str = "smollm2-135m-instruct"  # load_model spec (a saved LoRA adapter folder works), or remote name
    device: Optional[str] = None
    dtype: Optional[str] = None
    trust_remote_code: bool = False
    system_prompt: Optional[str] = None  # prepended when a conversation has none
    # openai backend: values are read from these environment variables, never stored or logged
    base_url_env: str = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 3
    retry_budget_s: float = 120.0  # most seconds one request may spend waiting on Retry-After before it fails
    concurrency: int = 4


@dataclass
class BehaviorsConfig:
    """Which behaviors to attack: a file, optional targets, filters and a seeded sample."""

    path: str = ""
    targets: Optional[str] = None
    categories: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # exact ids, or ranges "advbench_1..advbench_50"
    rows: Optional[str] = None  # positions in file order, "0:50" or "0:10,20:30"
    sample: Optional[int] = None  # seeded random subset after filtering
    seed: int = 0
    limit: Optional[int] = None  # first N after filtering/sampling


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    batch_size: int = 16
    seed: int = 0


@dataclass
class EvalConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    behaviors: BehaviorsConfig = field(default_factory=BehaviorsConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    attacks: list[str] = field(default_factory=lambda: ["direct"])
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    judges: list[str] = field(default_factory=lambda: ["refusal"])
    judge_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    early_stop_judge: Optional[str] = None  # judge GCG/PAIR consult; default: the first in `judges`
    retry_errors: bool = True  # on resume, redo attempts whose generation failed
    output_dir: str = "runs/eval"

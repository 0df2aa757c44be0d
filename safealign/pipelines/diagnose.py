"""The ``safealign diagnose`` runners: ranking accuracy, gradient entanglement, the anchor gap, the E-share.

Each runner takes its config (YAML + ``key=value`` like ``train`` and ``eval``; the CLI's flags are the
same keys), loads the model and the pairs, measures, and returns a :class:`Diagnosis`: a summary dict
(what ``RUN_DIR/diagnostics/<name>.json`` holds and the HTML report embeds) and one row per pair.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from safealign.errors import UserError
from safealign.io import write_json, write_jsonl


@dataclass
class DiagnoseConfig:
    """What every diagnostic reads: the model, the preference data and how to encode and score it."""

    model: str = "???"  # load_model spec: built-in name, hub id, folder, or a run's final/ adapter folder
    # a hub id's branch, tag or commit, as training's (safealign.train.config): also a ranking ref naming that hub id
    model_revision: Optional[str] = None
    data: str = "???"  # preference data: file (jsonl/json/csv/parquet, .gz) or HF dataset id
    format: str = "auto"  # auto, standard, conversational, implicit
    columns: dict[str, str] = field(default_factory=dict)  # field -> your column name
    split: Optional[str] = None  # split for HF dataset ids
    harmful: Optional[bool] = None  # fills rows without a harmful flag
    limit: Optional[int] = None  # the first N rows
    max_length: int = 512  # prompt + response tokens
    max_prompt_length: int = 256
    batch_size: int = 8  # pairs per forward pass when scoring
    chunk_size: int = 1024  # positions per log-softmax chunk
    device: Optional[str] = None  # cpu, cuda, cuda:1 (default: cuda when available)
    dtype: Optional[str] = None  # float32, bfloat16, float16 (default: bf16 on GPU, fp32 on CPU)
    trust_remote_code: bool = False
    output_dir: Optional[str] = None  # also write RUN_DIR/diagnostics/<name>.json and <name>_pairs.jsonl

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """At load, before the model: a batch size below 1 would score no pair (-1) or fail deep in a range (0)."""
        from safealign.checks import at_least
        from safealign.train.config import check_model_revision

        at_least("batch_size", self.batch_size, 1)
        check_model_revision(self.model, self.model_revision)


@dataclass
class EntanglementConfig(DiagnoseConfig):
    params: str = "auto"  # auto, all, trainable, lora, lm_head, last:N (safealign.train.grads)
    loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])  # a, b on log π(chosen), log π(rejected)


@dataclass
class AnchorConfig(DiagnoseConfig):
    prefix: str = "community_guidelines"  # a built-in safety prefix name or your own text
    beta: float = 0.1  # β of the E-DPO logit shift −β·gap
    answer: int = 0  # also answer the first N harmful prompts as asked and with the prefix: refusal rates
    samples: int = 0  # with answer: also this many sampled answers (temperature 1) per prompt and view
    max_new_tokens: int = 48  # of those answers


@dataclass
class EShareConfig(DiagnoseConfig):
    prefix: str = "community_guidelines"  # a built-in safety prefix name or your own text
    beta: float = 0.1  # β of both preference terms
    nll_weight: float = 1.0  # W of the NLL term: the demo's rpo = DPO + W·NLL(chosen); 0 = pure (E-)DPO
    adapter: Optional[str] = None  # a trained LoRA adapter folder (a run's train/final): measure at that point
    lora_r: int = 16  # without an adapter: a fresh LoRA like the demo's (alpha = 2r; B = 0, so policy = reference);
    # 0 = no LoRA, the gradients are over the parameters ``params`` selects
    seed: int = 0  # the fresh LoRA's random A matrices
    params: str = "auto"  # auto (lora with LoRA weights, else all), all, trainable, lora, lm_head, last:N


@dataclass
class HiddenNormsConfig(DiagnoseConfig):
    # layer l: the residual stream after l blocks, 0 = the embeddings (default: circuit breakers' target layers)
    layers: Optional[list[int]] = None
    top_k: int = 3  # dimensions whose share of the squared norm is reported
    response: str = "rejected"  # chosen or rejected: the response appended to each prompt


@dataclass
class Inputs:
    model: Any
    tokenizer: Any
    pairs: list  # PreferencePair, in encoded order
    encoded: list  # EncodedPair, index = position in this list
    collate: Any
    rows: int
    dropped: int
    truncation: Any = None  # the encoder's TruncationReport


@dataclass(frozen=True)
class Diagnosis:
    name: str  # ranking, entanglement, anchor: the file stem under RUN_DIR/diagnostics/
    result: dict[str, Any]
    pairs: list[dict[str, Any]]


def load_model(config: DiagnoseConfig, spec: str | None = None, *, lora: Any = None):
    """``spec`` (default ``config.model``) loaded as the config says; at ``model_revision`` where it names
    ``config.model`` (safealign.train.config.same_model_revision)."""
    from safealign.models import load_model as load
    from safealign.train.config import same_model_revision

    spec = spec or config.model
    return load(spec, device=config.device, dtype=config.dtype, trust_remote_code=config.trust_remote_code,
                revision=same_model_revision(spec, config.model, config.model_revision), lora=lora)


def load_inputs(config: DiagnoseConfig, *, transform: Any = None, loaded: tuple[Any, Any] | None = None) -> Inputs:
    """Load the model (unless ``loaded`` holds model and tokenizer) and the data, and encode the pairs (reference
    view from ``transform``)."""
    from safealign.data import PairEncoder, PreferenceCollator, load_preferences
    from safealign.train.data import check_reference_fits

    model, tokenizer = loaded or load_model(config)
    parsed = load_preferences(config.data, format=config.format, columns=dict(config.columns) or None,
                              split=config.split, harmful=config.harmful, limit=config.limit)
    pairs = [p for p in parsed.items if hasattr(p, "chosen")]
    if not pairs:
        raise UserError(f"{config.data}: no usable preference pairs "
                        f"({len(parsed.dropped)} of {parsed.rows} rows dropped)")
    encoder = PairEncoder(tokenizer, transform=transform, max_length=config.max_length,
                          max_prompt_length=config.max_prompt_length)
    encoded, report = encoder.encode_all(pairs)
    check_reference_fits(model, config.max_length, report)
    kept = [pairs[item.index] for item in encoded]  # encode_all drops too-long prompts
    encoded = [dataclasses.replace(item, index=i) for i, item in enumerate(encoded)]
    return Inputs(model, tokenizer, kept, encoded, PreferenceCollator(tokenizer.pad_token_id), parsed.rows,
                  len(parsed.dropped) + len(report.dropped), report)


def header(config: DiagnoseConfig, inputs: Inputs, started: float, **extra: Any) -> dict[str, Any]:
    pinned = {"model_revision": config.model_revision} if config.model_revision is not None else {}
    return {"model": config.model, **pinned, "data": config.data, "limit": config.limit, "rows": inputs.rows,
            "pairs": len(inputs.encoded), "dropped": inputs.dropped, **extra,
            "wall_seconds": round(time.perf_counter() - started, 2)}


def truncation_counts(inputs: Inputs) -> dict[str, int]:
    """What left truncation (``max_prompt_length``) did to the prompts, as the encoder counted them (rows then dropped
    as too long included): prompts truncated, reference views that lost (part of) the prefix, and reference views
    that lost their start instead (safealign.data.tokenize.TruncationReport). A prefix cut whole leaves the
    reference the policy's prompt: that pair is not counted as transformed, and these counts say why."""
    report = inputs.truncation
    return {"prompts_truncated": report.prompts_truncated, "reference_prefixes_cut": report.reference_prefixes_cut,
            "reference_heads_cut": report.reference_heads_cut}


def write_outputs(diagnosis: Diagnosis, output_dir: str | Path) -> Path:
    """``output_dir/diagnostics/<name>.json`` (the summary) and ``<name>_pairs.jsonl`` (one row per pair)."""
    folder = Path(output_dir) / "diagnostics"
    path = folder / f"{diagnosis.name}.json"
    write_json(path, diagnosis.result)
    write_jsonl(folder / f"{diagnosis.name}_pairs.jsonl", diagnosis.pairs)
    return path


def run_entanglement(config: EntanglementConfig) -> Diagnosis:
    """Gradient entanglement of chosen and rejected log-probs per pair (arXiv 2410.13828)."""
    from safealign.diagnostics import measure_entanglement

    started = time.perf_counter()
    inputs = load_inputs(config)
    report = measure_entanglement(inputs.model, inputs.encoded, inputs.collate, params=config.params,
                                  weights=_weights(config.loss_weights), chunk_size=config.chunk_size)
    result = {"diagnostic": "entanglement", **header(config, inputs, started), "summary": report.summary()}
    pairs = [{"row": inputs.pairs[i].row, **row} for i, row in enumerate(report.rows())]
    return finish(config, Diagnosis("entanglement", result, pairs))


def run_anchor(config: AnchorConfig) -> Diagnosis:
    """How far the safety prefix moves the reference's log-probs on harmful pairs (safealign.diagnostics.anchor)."""
    from safealign.data import build_transform
    from safealign.diagnostics import measure_anchor_gap

    from safealign.checks import at_least

    at_least("answer", config.answer, 0)  # before the model loads
    at_least("samples", config.samples, 0)
    at_least("max_new_tokens", config.max_new_tokens, 1)
    started = time.perf_counter()
    transform = build_transform("safety_prefix", prefix=config.prefix)
    inputs = load_inputs(config, transform=transform)
    gap = measure_anchor_gap(inputs.model, inputs.encoded, batch_size=config.batch_size,
                             chunk_size=config.chunk_size)
    result = {"diagnostic": "anchor", **header(config, inputs, started, prefix=transform.prefix),
              "summary": {**gap.summary(beta=config.beta), **truncation_counts(inputs)}}
    pairs = [{"row": inputs.pairs[row["index"]].row, **row} for row in gap.pairs()]
    if config.answer:  # what the transformed reference answers: the target of the E-anchor's KL pull
        from safealign.pipelines.anchor_target import anchor_target

        result["target"], answers = anchor_target(
            inputs.model, inputs.tokenizer, inputs.pairs, transform, prompts=config.answer, samples=config.samples,
            max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
        by_index = {row["index"]: row for row in answers}
        pairs = [{**row, **{k: v for k, v in by_index.get(row["index"], {}).items() if k not in row}}
                 for row in pairs]
        result["wall_seconds"] = round(time.perf_counter() - started, 2)
    return finish(config, Diagnosis("anchor", result, pairs))


def run_e_share(config: EShareConfig) -> Diagnosis:
    """How much of E-DPO's update the E-anchor changes, at step 0 or at a trained adapter
    (safealign.diagnostics.e_share)."""
    from safealign.data import build_transform
    from safealign.diagnostics import measure_e_share

    started = time.perf_counter()
    if config.beta <= 0 or config.nll_weight < 0 or config.lora_r < 0:
        raise UserError(f"e-share needs beta > 0, nll_weight >= 0 and lora_r >= 0; got beta={config.beta}, "
                        f"nll_weight={config.nll_weight}, lora_r={config.lora_r}")
    transform = build_transform("safety_prefix", prefix=config.prefix)
    model, tokenizer, point = _e_share_model(config)
    inputs = load_inputs(config, transform=transform, loaded=(model, tokenizer))
    share = measure_e_share(inputs.model, inputs.encoded, inputs.collate, beta=config.beta,
                            nll_weight=config.nll_weight, params=config.params, batch_size=config.batch_size,
                            chunk_size=config.chunk_size)
    result = {"diagnostic": "e_share", **header(config, inputs, started, prefix=transform.prefix, point=point),
              "summary": {**share.summary(), **truncation_counts(inputs)}}
    pairs = [{"row": inputs.pairs[row["index"]].row, **row} for row in share.pairs()]
    return finish(config, Diagnosis("e_share", result, pairs))


def _e_share_model(config: EShareConfig) -> tuple[Any, Any, str]:
    """(model, tokenizer, where in training it stands): a trained adapter on the base, or a fresh LoRA (step 0)."""
    if config.adapter:
        from safealign.models.lora import ADAPTER_CONFIG, load_adapter

        if not (Path(config.adapter) / ADAPTER_CONFIG).is_file():
            raise UserError(f"adapter {config.adapter}: no {ADAPTER_CONFIG} there; pass a LoRA adapter folder "
                            "(a run's train/final)")
        base, tokenizer = load_model(config)
        return load_adapter(base, config.adapter, trainable=False), tokenizer, f"adapter {config.adapter}"
    if not config.lora_r:
        model, tokenizer = load_model(config)
        return model, tokenizer, "step 0 (no LoRA)"
    import torch

    from safealign.models import LoraSettings

    torch.manual_seed(config.seed)  # LoRA's A matrices are random; B = 0 keeps the policy equal to the reference
    model, tokenizer = load_model(config, lora=LoraSettings(r=config.lora_r, alpha=2 * config.lora_r))
    return model, tokenizer, f"step 0 (fresh LoRA r={config.lora_r}, alpha={2 * config.lora_r}, seed {config.seed})"


def _weights(values: list[float]) -> tuple[float, float]:
    if len(values) != 2:
        raise UserError(f"loss_weights must be two numbers [a, b], got {list(values)}")
    return float(values[0]), float(values[1])


def finish(config: DiagnoseConfig, diagnosis: Diagnosis) -> Diagnosis:
    if config.output_dir:
        write_outputs(diagnosis, config.output_dir)
    return diagnosis


def run_hidden_norms(config: HiddenNormsConfig) -> Diagnosis:
    """How concentrated the residual stream is at the chosen layers (safealign.diagnostics.hidden_norms): what
    a hidden-state objective's cosine sees on the pairs' prompt + response sequences."""
    from safealign.diagnostics.hidden_norms import measure_hidden_norms
    from safealign.train.hooks import num_layers
    from safealign.train.objectives.circuit_breakers import default_target_layers

    if config.response not in ("chosen", "rejected") or config.top_k < 1:
        raise UserError(f"hidden-norms: response is chosen or rejected and top_k >= 1; got response="
                        f"{config.response!r}, top_k={config.top_k}")
    started = time.perf_counter()
    inputs = load_inputs(config)
    layers = config.layers or default_target_layers(num_layers(inputs.model))
    sequences = [list(p.prompt_ids) + list(getattr(p, f"{config.response}_ids")) for p in inputs.encoded]
    per_layer = measure_hidden_norms(inputs.model, sequences, layers, config.top_k)
    result = {"diagnostic": "hidden_norms", **header(config, inputs, started, response=config.response),
              "summary": {"layers": per_layer}}
    return finish(config, Diagnosis("hidden_norms", result, []))

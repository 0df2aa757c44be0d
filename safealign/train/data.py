"""A run's training data: parse, optionally unpair, check against the loss's input kind, encode.

Parsing and the checks need no model, so :func:`load_training_items` and :func:`check_loss_inputs` run
before the model loads and a data/loss mismatch fails in seconds. The loss's ``input_kind`` selects a :class:`DataKind`:
how rows are encoded and collated and which reference columns the cache provides.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from safealign.data import PairEncoder, PreferenceCollator, build_transform, load_preferences
from safealign.data.formats import ParseResult
from safealign.errors import UserError
from safealign.train.config import TrainConfig
from safealign.train.unpaired import (
    UnpairedKLCollator, reference_overrun, strip_reference_view, unpair_pairs, with_kl_partners,
)
from safealign.types import PreferencePair, UnpairedExample

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataKind:
    """How one input kind of loss is fed: encoding, collation, cached reference columns."""

    name: str
    # (encoder, items, max_length, kl_partners) -> (encoded, report); kl_partners: build KTO's mismatched sequences
    encode: Callable[[PairEncoder, Sequence[Any], int, bool], tuple[list[Any], Any]]
    collator: Callable[[int], Callable[[list[Any]], dict]]  # pad_token_id -> collate
    ref_columns: tuple[str, str] | None  # None: the reference is not cached, always a live forward
    strip_reference_view: Callable[[Any], Any]  # drop the reference prompt once it is cached


def check_reference_fits(model: Any, max_length: int, report: Any) -> None:
    """UserError when a reference view runs past the scoring model's position limit. Responses are budgeted by the
    policy view (safealign/data/tokenize.py), so a reference view with a longer (safety-prefixed) prompt runs over
    ``max_length`` by up to ``report.reference_overrun_max`` tokens: past the model's context an absolute-position
    model indexes out of range and a rotary one extrapolates beyond what it was trained on."""
    from safealign.models.load import context_length

    over = getattr(report, "reference_overrun_max", 0)
    limit = context_length(model)
    if over and limit and max_length + over > limit:
        raise UserError(f"reference views run to {max_length + over} tokens (max_length {max_length} plus up to "
                        f"{over} tokens of the reference's longer prompt), past the model's context of {limit} "
                        f"positions: set max_length to {limit - over} or less")


def _encode_pairs(encoder: PairEncoder, items: Sequence[Any], max_length: int, kl_partners: bool):
    del max_length, kl_partners  # a pair's two responses are its own; there are no KL partners
    encoded, report = encoder.encode_all(items)
    return [dataclasses.replace(item, index=i) for i, item in enumerate(encoded)], report


def _encode_unpaired(encoder: PairEncoder, items: Sequence[Any], max_length: int, kl_partners: bool):
    encoded, report = encoder.encode_all_unpaired(items)
    encoded = [dataclasses.replace(item, index=i) for i, item in enumerate(encoded)]
    items = with_kl_partners(encoded, max_length, partners=kl_partners)
    return items, _with_kl_views_counted(report, items, max_length)


def _with_kl_views_counted(report: Any, items: Sequence[Any], max_length: int) -> Any:
    """``report`` with its reference overrun counted over whole unpaired reference views, KL partners' included
    (:func:`~safealign.train.unpaired.reference_overrun`; the encoder saw each row's own completion only), so
    :func:`check_reference_fits` sees the longest sequence the reference scores."""
    rows, most = reference_overrun(items, max_length)
    if (rows, most) == (report.reference_views_over, report.reference_overrun_max):
        return report
    report = dataclasses.replace(report, reference_views_over=rows, reference_overrun_max=most)
    logger.warning("tokenization, KTO's KL partner sequences included: %s", report.summary())
    return report


def _encode_token_pairs(encoder: PairEncoder, items: Sequence[Any], max_length: int, kl_partners: bool):
    _check_answer_opens_the_response(encoder, items)
    return _encode_pairs(encoder, items, max_length, kl_partners)


def _check_answer_opens_the_response(encoder: PairEncoder, items: Sequence[Any]) -> None:
    """UserError when the chat template puts fixed text (Qwen3's empty ``<think>`` block) before a chosen answer.

    A per-token loss sees the scored response from its first token (train/token_inputs.py), and constrained_sft's
    β schedule (losses/safety.py) is meant for the answer's first tokens; on such a template it would fall on the
    template's text, which the model predicts alike before and after training. Leading whitespace is allowed (it
    joins the answer's first token or takes one position). The deep-aug and derta transforms' prefixed rows are
    refused on such templates when they are encoded (data/tokenize.py)."""
    for item in items:
        text = (item.response_prefix or "") + item.chosen
        before = encoder.text_before_content(item.prompt, text, item)
        if before.strip():
            raise UserError(
                f"{item.source} row {item.row}: the chat template renders {before[:60]!r} before the assistant's "
                "answer, and a per-token loss (constrained_sft) would put its first-token β schedule on that text "
                "instead of the answer's first tokens; use a model whose template opens the assistant turn with the "
                "answer (e.g. ChatML, Llama 3), edit the tokenizer's chat_template to drop that text, or use a pair "
                "loss (docs/safety-training.md)"
            )


DATA_KINDS = {
    "pair": DataKind("pair", _encode_pairs, PreferenceCollator, ("ref_chosen_logps", "ref_rejected_logps"),
                     lambda item: dataclasses.replace(item, ref_prompt_ids=None)),
    # per-token losses read pairs' chosen responses; no reference column is cached (ref_columns None: live)
    # (the template must open the assistant turn with the answer: _check_answer_opens_the_response)
    "token": DataKind("token", _encode_token_pairs, PreferenceCollator, None, lambda item: item),
    "unpaired": DataKind("unpaired", _encode_unpaired, UnpairedKLCollator, ("ref_logps", "ref_kl_logps"),
                         strip_reference_view),
}


def load_training_items(config: TrainConfig, input_kind: str) -> tuple[ParseResult, list[Any]]:
    """Parse the data, apply ``data.unpair``, and check the rows suit a loss taking ``input_kind``."""
    data = config.data
    parsed = load_preferences(data.path, format=data.format, columns=dict(data.columns) or None,
                              split=data.split, harmful=data.harmful, limit=data.limit)
    for drop in parsed.dropped[:20]:
        logger.warning("dropped %s row %s (%s): %s", drop.source, drop.row, drop.field, drop.reason)
    if parsed.dropped:
        logger.warning("dropped %d of %d rows in total", len(parsed.dropped), parsed.rows)
    if not parsed.items:
        raise UserError(f"{data.path}: no usable rows ({len(parsed.dropped)} dropped)")
    _check_loss_rows(config, parsed)
    unpaired = isinstance(parsed.items[0], UnpairedExample)
    items = list(parsed.items)
    if data.transforms:
        items = _transformed(config, parsed, items, unpaired)
    if data.unpair:
        if unpaired:
            raise UserError(f"data.unpair=true splits preference pairs, but {data.path} already holds unpaired "
                            f"examples (format {parsed.format!r}); remove data.unpair")
        items, unpaired = unpair_pairs(items), True
        logger.info("data.unpair: %d pairs -> %d unpaired examples", len(parsed.items), len(items))
    # a per-token loss reads the chosen side of preference pairs
    check_input_kind(config, parsed.format, "unpaired" if unpaired else "pair",
                     "pair" if input_kind == "token" else input_kind)
    return parsed, items


# formats whose rows no loss reads, with the objectives that train on them
OBJECTIVE_FORMATS = {"judgment": ("cut",)}


def _check_loss_rows(config: TrainConfig, parsed: ParseResult) -> None:
    """UserError when the rows are neither preference pairs nor unpaired examples (the judgment format's rows):
    no loss reads them, and they would fail later on a missing field."""
    odd = next((item for item in parsed.items if not isinstance(item, (PreferencePair, UnpairedExample))), None)
    if odd is None:
        return
    names = " + ".join(repr(spec.name) for spec in config.losses)
    objectives = OBJECTIVE_FORMATS.get(parsed.format, ())
    train = (f"they train the objective {' or '.join(map(repr, objectives))} (objective: {{name: {objectives[0]}}} "
             "instead of losses; docs/seed-methods.md)" if objectives else "no loss reads them")
    raise UserError(f"{config.data.path} (format {parsed.format!r}) holds {type(odd).__name__} rows, not the "
                    f"preference pairs or unpaired examples loss {names} reads: {train}; or give pair data (prompt, "
                    "chosen, rejected) or unpaired data (prompt, completion, label)")


def _transformed(config: TrainConfig, parsed: ParseResult, items: list[Any], unpaired: bool) -> list[Any]:
    """``data.transforms`` applied, after checking the rows carry what each needs (docs/safety-training.md)."""
    from safealign.data.row_transforms import apply_row_transforms, check_needs, validate_specs

    where = f"{config.data.path} (format {parsed.format!r})"
    if unpaired:
        raise UserError(f"data.transforms rewrite preference pairs, but {where} holds unpaired examples")
    specs = validate_specs(config.data.transforms)
    check_needs(specs, items, where)
    items = apply_row_transforms(specs, items, seed=config.seed)
    if not items:
        raise UserError(f"{where}: data.transforms {[s['name'] for s in specs]} left no rows")
    return items


def check_input_kind(config: TrainConfig, data_format: str, data_kind: str, loss_kind: str) -> None:
    """ValueError naming the data format and the loss when the data's kind is not the loss's."""
    if data_kind == loss_kind:
        return
    from safealign.losses import LOSSES, loss_names

    names = " + ".join(repr(spec.name) for spec in config.losses)
    where = f"{config.data.path} (format {data_format!r}{', data.unpair=true' if config.data.unpair else ''})"
    if loss_kind == "unpaired":
        raise UserError(f"{where} gives preference pairs, but loss {names} takes unpaired examples "
                        "(prompt, completion, label); set data.unpair=true to split each pair into a desirable "
                        "(chosen) and an undesirable (rejected) example, or use unpaired data")
    unpaired_losses = [n for n in loss_names() if LOSSES.meta(n)["input"] == "unpaired"]
    raise UserError(f"{where} gives unpaired examples, but loss {names} takes preference pairs; use an unpaired "
                    f"loss ({', '.join(unpaired_losses)}) or paired data (prompt, chosen, rejected)")


def check_loss_inputs(config: TrainConfig, data_format: str, items: Sequence[Any], loss: Any) -> None:
    """UserError when the data or recipe cannot supply an input the loss declares (docs/loss-inputs.md):
    aligned-model scores, cross-prompt pairs, for joint log-probs a reference that sees the same prompt, a
    reference prompt view only where some loss component scores a reference, and harmful flags on the rows a
    reference view keyed on them (safety_prefix, apply_to: harmful) changes."""
    names = " + ".join(repr(spec.name) for spec in config.losses)
    transform = build_transform(config.reference.transform, **dict(config.reference.transform_params))
    if not loss.needs_reference and not transform.is_identity:
        # no reference would see the changed prompt, yet the summary would record the E-variant
        raise UserError(f"loss {names} is reference-free, so reference.transform={config.reference.transform!r} "
                        "has nothing to act on: set reference.transform to identity, or add a loss that compares "
                        "with a reference")
    where = f"{config.data.path} (format {data_format!r})"
    if loss.input_kind in ("pair", "token"):
        _check_pair_inputs(names, where, items, loss, config, transform)
    _check_harmful_flags(where, items, config, transform)


def _check_pair_inputs(names: str, where: str, items: Sequence[Any], loss: Any, config: TrainConfig,
                       transform: Any) -> None:
    """check_loss_inputs for a loss over preference pairs: safety labels, scores, cross-prompt pairs, joint
    log-probs."""
    _check_safety_inputs(names, where, items, loss, config)
    if loss.needs_scores:
        _check_scores(names, where, items)
    cross = [item.row for item in items if item.rejected_prompt is not None]
    if loss.needs_cross_prompt_pairs and not cross:
        raise UserError(f"loss {names} learns from preferences between answers to different prompts, but no row of "
                        f"{where} has one (on same-prompt pairs it is dpo); give the 'joint' format: chosen_prompt, "
                        "chosen, rejected_prompt, rejected (docs/loss-inputs.md)")
    if cross and not loss.needs_cross_prompt_pairs:
        raise UserError(f"{where}: {len(cross)} row(s) (e.g. row {', '.join(map(str, cross[:5]))}) pair answers to "
                        f"different prompts, but loss {names} compares two answers to one prompt; use 'jpo' "
                        "(docs/loss-inputs.md) or give same-prompt pairs")
    if loss.joint_logps and not transform.is_identity:
        raise UserError(f"loss {names} scores the prompt tokens (joint log-probs), so the reference must score the "
                        f"same prompt; reference.transform={config.reference.transform!r} changes it: use identity")


def _check_harmful_flags(where: str, items: Sequence[Any], config: TrainConfig, transform: Any) -> None:
    """A reference view that changes only rows flagged harmful (safety_prefix's default ``apply_to: harmful``)
    needs the flags: with none flagged harmful every reference sees the policy's prompt and the run is the plain
    method recorded as its E-variant (UserError, as the online trainer refuses unflagged prompts:
    safealign/online/prompts.py); rows without a flag (None) keep the plain reference, which is said."""
    if not transform.reads_harmful_flag:
        return
    unflagged = [item.row for item in items if item.harmful is None]
    setting = (f"reference.transform={config.reference.transform!r} (apply_to: harmful) changes the reference's "
               "prompt only on rows flagged harmful")
    if not any(item.harmful is True for item in items):
        raise UserError(f"{where}: no row is flagged harmful ({len(unflagged)} of {len(items)} rows have no flag, "
                        f"{len(items) - len(unflagged)} harmful: false), and {setting}, so the run would be the plain "
                        "method; add a "
                        "'harmful' column (true/false per row; data.columns.harmful maps yours), set data.harmful: "
                        "true when every prompt is harmful, or use reference.transform: identity")
    if unflagged:
        logger.warning("%s: %d of %d rows (e.g. row %s) have no harmful flag; %s, so these keep the plain reference "
                       "(add a 'harmful' column, or set data.harmful to fill missing flags)", where, len(unflagged),
                       len(items), ", ".join(map(str, unflagged[:5])), setting)


def _check_safety_inputs(names: str, where: str, items: Sequence[Any], loss: Any, config: TrainConfig) -> None:
    """Safety labels for a loss that declares them; transition rows only where nothing scores a reference."""
    from safealign.data.row_transforms import FIELD_SOURCES

    if loss.needs_safety_flags:
        missing = [item.row for item in items if item.chosen_safe is None or item.rejected_safe is None]
        if missing:
            raise UserError(f"loss {names} needs a safety label of each response, but {len(missing)} of {len(items)} "
                            f"rows of {where} lack one (e.g. row {', '.join(map(str, missing[:5]))}); missing field "
                            f"'chosen_safe'/'rejected_safe': provided by {FIELD_SOURCES['chosen_safe'][1]}")
        unordered = [item.row for item in items if item.chosen_safe is False and item.rejected_safe is True]
        if unordered:
            raise UserError(f"loss {names}: {len(unordered)} rows of {where} prefer an unsafe response to a safe one "
                            f"(e.g. row {', '.join(map(str, unordered[:5]))}); add the 'safety_order' data transform "
                            "(data.transforms: [{name: safety_order}]) to reorder them as SafeDPO does")
        unsafe = [item.row for item in items if item.chosen_safe is False and item.rejected_safe is False]
        if unsafe:
            raise UserError(
                f"loss {names}: {len(unsafe)} rows of {where} have two unsafe responses (e.g. row "
                f"{', '.join(map(str, unsafe[:5]))}), which SafeDPO does not train on; add the 'safety_order' data "
                "transform (data.transforms: [{name: safety_order}]) to drop them as SafeDPO's T(D) does"
            )
    transition = [item.row for item in items if getattr(item, "chosen_target_refusal", None) is not None]
    if transition and loss.needs_reference:
        raise UserError(f"loss {names} compares with a reference, but {len(transition)} rows (e.g. row "
                        f"{transition[0]}) are DeRTa transition rows scored on other tokens than their inputs, which "
                        "the reference does not score; use a reference-free loss (sft) with the 'derta' transform, "
                        "or derta's rto=false")


def _check_scores(names: str, where: str, items: Sequence[Any]) -> None:
    missing = [item.row for item in items if item.chosen_scores is None]
    if missing:
        raise UserError(f"loss {names} needs each chosen response's scores under aligned models, but {len(missing)} "
                        f"of {len(items)} rows of {where} have no 'chosen_scores' (e.g. row "
                        f"{', '.join(map(str, missing[:5]))}); add a list of K per-token-averaged log-probs per row, "
                        "or map your column with data.columns.chosen_scores (docs/loss-inputs.md)")
    k = len(items[0].chosen_scores)
    odd = next((item for item in items if len(item.chosen_scores) != k), None)
    if odd is not None:
        raise UserError(f"{where}: 'chosen_scores' has {len(odd.chosen_scores)} values in row {odd.row} but {k} in "
                        f"row {items[0].row}; every row needs one score per aligned model, the same K models")


def encode_training_items(config: TrainConfig, tokenizer: Any, items: Sequence[Any], kind: DataKind,
                          *, joint_logps: bool = False, kl_partners: bool = True):
    """Tokenize with the configured reference view: (encoded rows with ``index`` = position, report).
    ``joint_logps``: score prompt and response tokens (the loss's declaration; docs/loss-inputs.md).
    ``kl_partners``: give each unpaired row KTO's mismatched KL sequence (the loss's ``needs_kl_partners``)."""
    transform = build_transform(config.reference.transform, **dict(config.reference.transform_params))
    encoder = PairEncoder(tokenizer, transform=transform, max_length=config.data.max_length,
                          max_prompt_length=config.data.max_prompt_length, joint_logps=joint_logps)
    return kind.encode(encoder, items, config.data.max_length, kl_partners)

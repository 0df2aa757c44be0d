"""Training a reward or cost model (``safealign train`` with ``trainer: reward``; docs/online.md).

Reward model (Bradley–Terry): ``L = −mean log σ(r_w − r_l − m)`` on any preference-pair data, with ``m`` a
constant ``margin`` or a per-row ``margin_column`` of a local JSON/JSONL file (TRL's ``margin`` column).
Cost model (Safe RLHF, arXiv 2310.12773; PKU-SafeRLHF layout: ``prompt``, ``response_0``, ``response_1``,
``safer_response_id``, ``is_response_0_safe``, ``is_response_1_safe``): cost > 0 means unsafe, ``s = +1``
for an unsafe response and −1 for a safe one,
``L = −log σ(c_unsafer − c_safer) − log σ(s_safer·c_safer) − log σ(s_unsafer·c_unsafer)``.
Both add ``regularization·mean(score²)`` over the batch's 2B scores (safe-rlhf's, = ``½·mean(r_w² + r_l²)``).
Metrics: pair accuracy ``mean[r_w > r_l]`` (ties wrong), the mean margin, and for costs
``accuracy_sign = mean[s·c > 0]``; on a held-out split (``eval_fraction``) at the end of training and every
``eval_steps``.
Pairs are encoded with ``data.max_length``/``max_prompt_length`` (long prompts keep their end); a pair whose
response would be cut to fit is dropped, as TRL's RewardTrainer drops pairs over ``max_length`` (cut, its score
is read mid-answer, and two answers sharing a long beginning become one sequence), and so is a pair whose two
sides encode the same; both counted (:func:`encode_rows`). The lengths are saved with the model, which scoring
encodes with (safealign/eval/reward_model.py).
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from safealign import checks
from safealign.config import save_config
from safealign.errors import UserError
from safealign.io import append_jsonl, read_user_jsonl, write_json
from safealign.models.modes import eval_mode
from safealign.online.objectives import clip_gradients
from safealign.train.config import DataConfig, LoraConfig, check_attn_implementation, check_model_revision
from safealign.train.run import TrainResult
from safealign.types import PreferencePair

logger = logging.getLogger(__name__)

T = TypeVar("T")
PKU_COLUMNS = ("prompt", "response_0", "response_1", "safer_response_id", "is_response_0_safe", "is_response_1_safe")
# what a cost model reads of ``data``: the PKU-SafeRLHF layout from a local file (_cost_rows)
COST_DATA_KEYS = ("path", "limit", "max_length", "max_prompt_length")


@dataclass
class RewardConfig:
    trainer: str = "reward"
    kind: str = "reward"  # reward | cost
    model: str = "smollm2-135m-instruct"
    model_revision: Optional[str] = None  # a hub id's branch, tag or commit; recorded in reward_model.json
    output_dir: str = "runs/reward_model"
    trust_remote_code: bool = False
    # the attention kernels the backbone trains with, as the preference trainer's (check_attn_implementation); None:
    # transformers' default. Not recorded in reward_model.json: scoring loads the saved backbone with the default
    attn_implementation: Optional[str] = None
    data: DataConfig = field(default_factory=DataConfig)
    margin: float = 0.0
    margin_column: Optional[str] = None
    regularization: float = 0.0  # safe-rlhf uses 0.001
    eval_fraction: float = 0.1
    eval_steps: int = 0
    learning_rate: float = 1e-4
    num_train_epochs: int = 1
    max_steps: int = -1
    per_device_train_batch_size: int = 4
    max_grad_norm: float = 1.0  # 0: no clipping (as the offline trainer); grad_norm is logged either way
    weight_decay: float = 0.0
    lora: LoraConfig = field(default_factory=lambda: LoraConfig(dropout=0.0))
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.trainer != "reward":
            raise UserError(f"trainer={self.trainer!r}: this schema is the reward-model trainer's")
        checks.one_of("kind", self.kind, ("reward", "cost"))
        check_model_revision(self.model, self.model_revision)
        check_attn_implementation(self.attn_implementation)
        self.data.validate()
        checks.finite("margin", self.margin)
        checks.at_least("regularization", self.regularization, 0)
        checks.within("eval_fraction", self.eval_fraction, 0, 1, open_high=True)
        checks.at_least("eval_steps", self.eval_steps, 0)
        checks.at_least("learning_rate", self.learning_rate, 0)
        checks.at_least("num_train_epochs", self.num_train_epochs, 1)
        if self.max_steps == 0 or self.max_steps < -1:
            raise UserError(f"max_steps must be -1 (use num_train_epochs) or >= 1, got {self.max_steps}")
        checks.at_least("per_device_train_batch_size", self.per_device_train_batch_size, 1)
        checks.at_least("max_grad_norm", self.max_grad_norm, 0, "0 means no clipping")
        self.lora.validate()
        if self.kind == "cost" and self.margin_column:
            raise UserError("margin_column is for reward models; a cost model learns from safety labels")
        if self.kind == "cost" and self.margin:
            raise UserError(f"margin={self.margin}: a cost model's loss has no margin (it learns from safety labels "
                            "and pair order alone); leave margin at 0 for kind: cost")
        self._check_data_keys()

    def _check_data_keys(self) -> None:
        """Refuse ``data`` settings this trainer would silently ignore: ``unpair`` (a reward model learns from
        pairs) and, for a cost model, whatever it does not read (:data:`COST_DATA_KEYS`)."""
        if self.data.unpair:
            raise UserError("data.unpair: a reward or cost model learns from preference pairs; remove data.unpair")
        if self.kind != "cost":
            return
        default = DataConfig()
        for f in fields(DataConfig):
            if f.name not in COST_DATA_KEYS and getattr(self.data, f.name) != getattr(default, f.name):
                raise UserError(f"data.{f.name}: a cost model reads the PKU-SafeRLHF layout ({', '.join(PKU_COLUMNS)}) "
                                f"from a local JSONL file and only data.{', data.'.join(COST_DATA_KEYS)}; remove "
                                f"data.{f.name}")


@dataclass(frozen=True)
class Row:
    """One training pair: ``chosen`` is the better (reward) or safer (cost) response."""

    pair: PreferencePair
    margin: float = 0.0
    signs: tuple[float, float] = (0.0, 0.0)  # cost: (s_safer, s_unsafer), +1 unsafe / −1 safe


@dataclass(frozen=True)
class RewardResult(TrainResult):
    eval_metrics: dict[str, float] = field(default_factory=dict)  # held-out pair accuracy and margin


def load_rows(config: RewardConfig) -> list[Row]:
    rows = _cost_rows(config) if config.kind == "cost" else _reward_rows(config)
    if len(rows) < 2:
        raise UserError(f"{config.data.path}: {len(rows)} usable row(s); a reward model needs at least 2")
    return rows


def _reward_rows(config: RewardConfig) -> list[Row]:
    from safealign.data import load_preferences
    from safealign.train.data import _transformed

    data = config.data
    parsed = load_preferences(data.path, format=data.format, columns=dict(data.columns) or None, split=data.split,
                              harmful=data.harmful, limit=data.limit)
    pairs = [p for p in parsed.items if isinstance(p, PreferencePair)]
    if len(pairs) != len(parsed.items):
        raise UserError(f"{data.path}: a reward model learns from preference pairs (prompt, chosen, rejected), "
                        f"not unpaired examples (format {parsed.format!r})")
    if data.transforms:  # as the offline trainer does (e.g. safety_order puts the safe answer first)
        pairs = _transformed(config, parsed, pairs, unpaired=False)  # reads data.*, seed
    margins = _margins(config, pairs)
    return [Row(pair, margin) for pair, margin in zip(pairs, margins)]


def _margins(config: RewardConfig, pairs: list[PreferencePair]) -> list[float]:
    if not config.margin_column:
        return [config.margin] * len(pairs)
    from safealign.data.sources import read_rows

    path = Path(config.data.path)
    if not path.is_file() or not path.name.lower().endswith((".json", ".jsonl", ".ndjson", ".json.gz", ".jsonl.gz",
                                                             ".ndjson.gz")):  # fmt: skip
        raise UserError(f"margin_column needs a local JSON/JSONL data file, got {config.data.path}")
    # the reader the pairs came from (a .json list as well as JSONL), so pair.row indexes the same records
    records = dict(read_rows(path))
    margins = []
    for pair in pairs:
        value = records[pair.row].get(config.margin_column)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{path} row {pair.row}: field {config.margin_column!r} must be a finite number, "
                            f"got {value!r}")
        margins.append(float(value))
    return margins


def _cost_rows(config: RewardConfig) -> list[Row]:
    """The PKU-SafeRLHF layout from a local JSONL file (see the module docstring), read strictly as a user's file: a
    missing file or a cut-off line is an error naming it, not fewer rows; ``row`` (0-based, as the pair's) and line
    name a row in messages."""
    from safealign.data.messages import RowDrop, parse_bool, parse_prompt, require_text

    path = config.data.path
    rows, identical = [], 0
    for index, (line, record) in enumerate(read_user_jsonl(path, "cost data file (data.path)")):
        if config.data.limit is not None and len(rows) >= config.data.limit:
            break
        where = f"{path} row {index} (line {line})"
        missing = [c for c in PKU_COLUMNS if c not in record]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)}; a cost model reads the "
                            f"PKU-SafeRLHF layout ({', '.join(PKU_COLUMNS)})")
        try:
            prompt = parse_prompt(record["prompt"])
            responses = [require_text(record[f"response_{i}"], f"response_{i}") for i in (0, 1)]
            safe = [parse_bool(record[f"is_response_{i}_safe"], f"is_response_{i}_safe") for i in (0, 1)]
        except RowDrop as exc:
            raise UserError(f"{where}: {exc.field}: {exc.reason}") from None
        safer = record["safer_response_id"]
        if isinstance(safer, bool) or not isinstance(safer, int) or safer not in (0, 1):
            raise UserError(f"{where}: safer_response_id must be the integer 0 or 1, got {safer!r}")
        if any(s is None for s in safe):
            raise UserError(f"{where}: is_response_0_safe and is_response_1_safe must both be set")
        if responses[0].strip() == responses[1].strip():  # for one prompt the same text is no preference
            identical += 1  # (dropped, as the reward path drops identical pairs: safealign/data/formats.py)
            continue
        unsafer = 1 - safer
        pair = PreferencePair(prompt, responses[safer], responses[unsafer], harmful=None, source=str(path), row=index)
        rows.append(Row(pair, 0.0, (-1.0 if safe[safer] else 1.0, -1.0 if safe[unsafer] else 1.0)))
    if identical:
        logger.warning("%s: dropped %d row(s): response_0 and response_1 are identical", path, identical)
    return rows


def encode_rows(encoder: Any, rows: list[Row]) -> tuple[list[tuple[Any, Row]], int, int]:
    """``([(encoded pair, row)], dropped over max_length, dropped as one sequence)``: each row encoded by
    ``encoder`` (a :class:`~safealign.data.PairEncoder`, whose truncation report is logged), less the pairs a
    response of which is cut to fit ``max_length`` (a score read mid-answer; TRL's RewardTrainer drops pairs over
    ``max_length`` too) and those whose chosen and rejected ids are the same (no gradient, a wrong pair in
    accuracy; e.g. a template that rewrites the answer). Both counted in a warning."""
    from safealign.data import PairEncoder

    encoded, _ = encoder.encode_all([row.pair for row in rows])  # a prompt leaving no room is dropped there
    # one id more room: a response that fills max_length there was cut at max_length
    wider = PairEncoder(encoder.tokenizer, max_length=encoder.max_length + 1,
                        max_prompt_length=encoder.max_prompt_length, chat_template=encoder.chat_template)
    kept, same = [], 0
    for item in encoded:
        row = rows[item.index]
        if _longest(item) >= encoder.max_length and _longest(wider.encode(row.pair, item.index)) > encoder.max_length:
            continue
        if item.chosen_ids == item.rejected_ids:
            same += 1
            continue
        kept.append((item, row))
    over = len(rows) - len(kept) - same
    if over:
        logger.warning("dropped %d of %d pair(s) whose prompt + chosen or rejected response is longer than "
                       "data.max_length=%d (cut, a response would be scored mid-answer); raise data.max_length to "
                       "keep them", over, len(rows), encoder.max_length)
    if same:
        logger.warning("dropped %d of %d pair(s) whose chosen and rejected responses encode as the same token ids",
                       same, len(rows))
    return kept, over, same


def _longest(item: Any) -> int:
    return len(item.prompt_ids) + max(len(item.chosen_ids), len(item.rejected_ids))


def split_rows(rows: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, held-out), a seeded shuffle; at least one row each side when held-out is asked for."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if fraction > 0 else 0
    return [rows[i] for i in order[held:]], [rows[i] for i in order[:held]]


def pair_loss(chosen: Tensor, rejected: Tensor, rows: list[Row], kind: str, regularization: float) -> Tensor:
    if kind == "reward":
        margins = torch.tensor([r.margin for r in rows], device=chosen.device)
        loss = -F.logsigmoid(chosen - rejected - margins).mean()
    else:  # chosen = safer (lower cost), rejected = unsafer
        signs = torch.tensor([r.signs for r in rows], device=chosen.device)
        loss = (-F.logsigmoid(rejected - chosen) - F.logsigmoid(signs[:, 0] * chosen)
                - F.logsigmoid(signs[:, 1] * rejected)).mean()
    if regularization:
        loss = loss + regularization * torch.cat([chosen, rejected]).pow(2).mean()  # safe-rlhf: over all 2B scores
    return loss


def pair_metrics(chosen: Tensor, rejected: Tensor, rows: list[Row], kind: str) -> dict[str, float]:
    better = chosen > rejected if kind == "reward" else rejected > chosen
    margin = chosen - rejected if kind == "reward" else rejected - chosen
    out = {"accuracy": float(better.float().mean()), "margin": float(margin.mean())}
    if kind == "cost":
        signs = torch.tensor([r.signs for r in rows], device=chosen.device)
        out["accuracy_sign"] = float(((signs[:, 0] * chosen > 0).float().mean()
                                      + (signs[:, 1] * rejected > 0).float().mean()) / 2)
    return out


def run_reward_training(config: RewardConfig, *, overwrite: bool = False) -> RewardResult:
    from safealign.data import PairEncoder, PreferenceCollator
    from safealign.models import LoraSettings, load_model
    from safealign.eval.reward_model import ScalarRewardModel, save_reward_model

    start = time.time()
    config.validate()
    rows = load_rows(config)
    out = Path(config.output_dir)
    _claim(out, config, overwrite)
    save_config(config, out / "config.yaml")
    torch.manual_seed(config.seed)
    lora = LoraSettings(r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout,
                        target_modules=config.lora.target_modules,
                        last_layers=config.lora.last_layers) if config.lora.enabled else None
    backbone, tokenizer = load_model(config.model, lora=lora, for_training=True,
                                     trust_remote_code=config.trust_remote_code, revision=config.model_revision,
                                     attn_implementation=config.attn_implementation)
    model = ScalarRewardModel(backbone).train()
    device = next(backbone.parameters()).device
    encoder = PairEncoder(tokenizer, max_length=config.data.max_length, max_prompt_length=config.data.max_prompt_length)
    collate = PreferenceCollator(tokenizer.pad_token_id)
    items, over, same = encode_rows(encoder, rows)
    if len(items) < 2:
        raise UserError(f"{config.data.path}: {len(items)} of {len(rows)} pair(s) left after dropping {over} longer "
                        f"than data.max_length={config.data.max_length} and {same} whose two sides encode the same; "
                        "a reward model needs at least 2 (raise data.max_length)")
    train_items, held_items = split_rows(items, config.eval_fraction, config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    size = config.per_device_train_batch_size
    per_epoch = -(-len(train_items) // size)
    total = config.max_steps if config.max_steps > 0 else per_epoch * config.num_train_epochs
    metrics_path = out / "metrics.jsonl"
    step, eval_metrics = 0, {}
    rng = random.Random(config.seed)
    while step < total:
        order = list(range(len(train_items)))
        rng.shuffle(order)
        for begin in range(0, len(order), size):
            if step >= total:
                break
            chunk = [train_items[i] for i in order[begin:begin + size]]
            chosen, rejected = _scores(model, collate, chunk, device)
            loss = pair_loss(chosen, rejected, [r for _, r in chunk], config.kind, config.regularization)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_gradients(params, config.max_grad_norm)
            optimizer.step()
            step += 1
            record = {"step": step, "loss": loss.item(), "grad_norm": grad_norm,
                      **pair_metrics(chosen.detach(), rejected.detach(), [r for _, r in chunk], config.kind)}
            if held_items and (step == total or (config.eval_steps and step % config.eval_steps == 0)):
                eval_metrics = {f"eval/{k}": v for k, v in evaluate(model, collate, held_items, device, config).items()}
                record.update(eval_metrics)
            append_jsonl(metrics_path, [record])
    final = out / "final"
    save_reward_model(model, tokenizer, final, kind=config.kind, base=config.model, base_revision=config.model_revision,
                      max_length=config.data.max_length, max_prompt_length=config.data.max_prompt_length)
    wall = round(time.time() - start, 2)
    write_json(out / "train_summary.json", {"trainer": "reward", "kind": config.kind, "steps": step,
                                            "train_pairs": len(train_items), "held_out_pairs": len(held_items),
                                            "pairs_dropped_over_max_length": over,
                                            "pairs_dropped_same_ids": same,
                                            **eval_metrics, "wall_seconds": wall})
    return RewardResult(out, final, metrics_path, "none (reward model)", step, wall, eval_metrics)


def _scores(model: Any, collate: Any, chunk: list, device: Any) -> tuple[Tensor, Tensor]:
    batch = collate([item for item, _ in chunk])
    scores = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
    return scores[: len(chunk)], scores[len(chunk):]


@torch.no_grad()
def evaluate(model: Any, collate: Any, items: list, device: Any, config: RewardConfig) -> dict[str, float]:
    chosen, rejected = [], []
    with eval_mode(model):
        for begin in range(0, len(items), config.per_device_train_batch_size):
            c, r = _scores(model, collate, items[begin:begin + config.per_device_train_batch_size], device)
            chosen.append(c)
            rejected.append(r)
    c, r = torch.cat(chosen), torch.cat(rejected)
    rows = [row for _, row in items]
    return {**pair_metrics(c, r, rows, config.kind), "loss": float(pair_loss(c, r, rows, config.kind, 0.0))}


def _claim(out: Path, config: RewardConfig, overwrite: bool) -> None:
    from safealign.config import to_dict
    from safealign.io.rundir import claim_run_dir, file_digest, make_fingerprint

    fingerprint = make_fingerprint("reward", to_dict(config), exclude=("output_dir", "trust_remote_code", "data.path"),
                                   extra={"data.content": file_digest(config.data.path) or config.data.path})

    def check(continues: bool) -> None:
        if not continues or overwrite:
            return
        if (out / "final").is_dir():
            raise UserError(f"{out} holds a trained reward model with these settings; pass --overwrite to train "
                            "it again, or use another output_dir")
        # a run killed before final/ was written: reward-model training keeps no checkpoints to resume from
        raise UserError(f"{out} holds an unfinished reward-model run with these settings (metrics but no final/ "
                        "model: stopped before the end); reward-model training does not resume, so pass --overwrite "
                        "to start it again, or use another output_dir")

    claim_run_dir(out, fingerprint, outputs=("final", "metrics.jsonl", "train_summary.json", "config.yaml"),
                  overwrite=overwrite, check=check)

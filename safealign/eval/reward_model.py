"""A scalar reward (or cost) head on a causal LM: the score of a sequence is a linear map of the final
hidden state at its last real token (docs/online.md, "Reward and cost models").

The last real token is read from the attention mask, not from ``input_ids != pad_token_id`` as
transformers' ``*ForSequenceClassification`` does: where the pad token is the eos token (the embedded
SmolLM2 model), that rule skips a response's closing eos and reads the score one token early.

A saved model is a folder: ``backbone/`` (the causal LM, LoRA merged, with its tokenizer), ``head.pt``
(float32; a head saved in bf16 loads into the float32 head) and ``reward_model.json`` (kind: reward or cost,
the base spec it was trained from and, if pinned, its hub revision, and the ``max_length``/``max_prompt_length`` it
was trained with: scoring encodes with the same, so a score is read where training read it; a folder saved before
they were recorded is scored with 1024/512, as then).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from safealign.errors import UserError
from safealign.types import Message

logger = logging.getLogger(__name__)

META_NAME = "reward_model.json"
HEAD_NAME = "head.pt"
# what a folder whose reward_model.json records no lengths (saved before they were) is scored with
DEFAULT_LENGTHS = {"max_length": 1024, "max_prompt_length": 512}
# the backbone's tokenizer files, chat template included (transformers writes it to chat_template.jinja, or into
# tokenizer_config.json): they decide the ids every score is read from
TOKENIZER_FILES = ("tokenizer*", "chat_template*", "special_tokens_map.json", "added_tokens.json", "vocab*",
                   "merges.txt", "*.model")


class ScalarRewardModel(nn.Module):
    """``backbone`` (a causal LM, possibly with a LoRA adapter) + a ``hidden → 1`` linear head.

    The head is float32 whatever the backbone's dtype, and the hidden state is cast to float32 before it: a
    bf16 head (the backbone's dtype on GPU) rounds scores near 3 to multiples of 2^-6 and makes AdamW steps of
    lr 1e-4 on its bias vanish (3 + 1e-4 rounds back to 3), which leaves a cost model's cost > 0 threshold
    where it was initialised."""

    def __init__(self, backbone: nn.Module, head: nn.Linear | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.get_output_embeddings().weight.shape[1]
        device = next(backbone.parameters()).device
        self.head = (head or nn.Linear(hidden, 1, bias=True, device=device)).float()
        if head is None:
            nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
            nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Scores ``(N,)`` of right- or left-padded ``(N, T)`` sequences."""
        decoder = self.backbone.get_decoder()
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = getattr(hidden, "last_hidden_state", None) if not isinstance(hidden, tuple) else hidden[0]
        last = last_token_index(attention_mask)
        states = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(states.float()).squeeze(-1)


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index of the rightmost attended position of each row ``(N,)``, for left or right padding."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.bool()).argmax(-1)


def save_reward_model(model: ScalarRewardModel, tokenizer: Any, out: Path, *, kind: str, base: str,
                      base_revision: str | None = None, max_length: int | None = None,
                      max_prompt_length: int | None = None) -> None:
    """``out``: the backbone with its LoRA merged (complete weights: loading it needs no base), the head, and
    reward_model.json naming the base spec and, when one was asked for, its hub revision (``base_revision``), and
    the lengths it was trained with when given (scoring reads them: :func:`scoring_lengths`)."""
    from safealign.models.load import merge_adapter

    out.mkdir(parents=True, exist_ok=True)
    backbone = merge_adapter(model.backbone)
    backbone.save_pretrained(str(out / "backbone"))
    tokenizer.save_pretrained(str(out / "backbone"))
    torch.save(model.head.state_dict(), out / HEAD_NAME)
    meta = {"kind": kind, "base": base, **({"base_revision": base_revision} if base_revision is not None else {})}
    lengths = {"max_length": max_length, "max_prompt_length": max_prompt_length}
    meta.update({k: v for k, v in lengths.items() if v is not None})
    (out / META_NAME).write_text(json.dumps(meta, indent=2))


def is_reward_model_dir(path: str | Path) -> bool:
    return (Path(path) / META_NAME).is_file()


def check_kind(path: str | Path, wanted: str, what: str) -> None:
    """A UserError naming ``what`` unless the reward-model folder ``path`` holds a ``wanted`` (reward or cost)
    model, by its reward_model.json; read before anything loads. The two point opposite ways (a cost is high
    where an answer is unsafe, a reward where it is good): a cost model used as a reward rewards unsafe answers,
    a reward model used as a cost penalises good ones. A path without reward_model.json (a plain
    sequence-classification model) is left to its loader."""
    if not is_reward_model_dir(path):
        return
    try:
        found = json.loads((Path(path) / META_NAME).read_text()).get("kind")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"{what}: cannot read {Path(path) / META_NAME}: {exc}") from exc
    if found not in ("reward", "cost"):
        raise UserError(f"{what}: {Path(path) / META_NAME} has kind {found!r}; a {wanted} model needs kind: {wanted}")
    if found != wanted:
        use = {"reward": "a reward (rewards:, --reward-model, DeAL's reward_model)", "cost": "a safe_rlhf.cost source"}
        raise UserError(f"{what}: {path} is a {found} model ({META_NAME} kind: {found}), but this setting needs a "
                        f"{wanted} model; use it as {use[found]}, or train a {wanted} model ('trainer: reward' with "
                        f"kind: {wanted})")


def reward_model_fingerprint(path: str | Path) -> str | None:
    """``sha256:<hex>`` over what a saved reward model scores with: the backbone's weight files (as
    safealign.models.identity fingerprints them) and its ``config.json``, the head and ``reward_model.json``;
    None when the folder holds none of them. A run scored by it records this, so other weights at the same
    path are another run (safealign/online/run.py)."""
    from safealign.models.identity import weights_fingerprint

    path = Path(path)
    backbone = weights_fingerprint(path / "backbone") if (path / "backbone").is_dir() else None
    files = {name: hashlib.sha256((path / name).read_bytes()).hexdigest() if (path / name).is_file() else None
             for name in ("backbone/config.json", HEAD_NAME, META_NAME)}
    if backbone is None and not any(files.values()):
        return None
    lines = [f"backbone {backbone}\n", *(f"{name} {digest}\n" for name, digest in files.items())]
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def reward_model_tokenizer_fingerprint(path: str | Path) -> str | None:
    """``sha256:<hex>`` over the backbone's tokenizer files (:data:`TOKENIZER_FILES`, the chat template among them)
    by name and content; None when it has none. Apart from :func:`reward_model_fingerprint`, whose digests runs
    recorded before keep: an online run records it under its own key (safealign/online/run.py), compared only where
    both runs did (safealign.io.rundir.WHEN_KNOWN)."""
    from safealign.models.identity import files_fingerprint

    return files_fingerprint(Path(path) / "backbone", TOKENIZER_FILES)  # top-level patterns: names as before


def scoring_lengths(meta: dict[str, Any]) -> dict[str, int]:
    """``max_length`` and ``max_prompt_length`` to score with: those the model was trained with (its
    reward_model.json), or :data:`DEFAULT_LENGTHS` for a folder saved before they were recorded."""
    return {key: int(meta.get(key) or default) for key, default in DEFAULT_LENGTHS.items()}


def load_reward_model(path: str | Path, *, device: str | torch.device | None = None) -> tuple[ScalarRewardModel, Any,
                                                                                            dict[str, Any]]:
    """``(model in eval mode, tokenizer, meta)`` of a folder written by :func:`save_reward_model`."""
    from safealign.models import load_model

    path = Path(path)
    if not is_reward_model_dir(path):
        raise UserError(f"{path}: not a reward model folder (no {META_NAME}); train one with a 'trainer: reward' "
                        "recipe")
    meta = json.loads((path / META_NAME).read_text())
    backbone, tokenizer = load_model(str(path / "backbone"), device=device)
    model = ScalarRewardModel(backbone)
    model.head.load_state_dict(torch.load(path / HEAD_NAME, map_location=next(backbone.parameters()).device))
    return model.eval(), tokenizer, meta


def encode_texts(tokenizer: Any, prompts: Sequence[tuple[Message, ...]], responses: Sequence[str],
                 max_length: int = 1024, max_prompt_length: int | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Right-padded ``(input_ids, attention_mask)`` of chat-rendered prompt + response (the response ids
    appended to the prompt ids, never re-tokenized together; prompts over ``max_prompt_length``, by default half of
    ``max_length``, keep their end), as training encodes a pair (safealign/data/tokenize.py). A response cut at
    ``max_length`` is scored mid-answer: logged (:func:`_warn_cut`)."""
    input_ids, attention_mask, cut = _encode(tokenizer, prompts, responses, max_length, max_prompt_length)
    _warn_cut(cut, len(responses), max_length)
    return input_ids, attention_mask


def _encode(tokenizer: Any, prompts: Sequence[tuple[Message, ...]], responses: Sequence[str], max_length: int,
            max_prompt_length: int | None) -> tuple[Tensor, Tensor, int]:  # fmt: skip
    """:func:`encode_texts`' tensors and how many responses were cut to fit."""
    from safealign.data import PairEncoder
    from safealign.data.collate import pad_sequences

    prompt_limit = max_length // 2 if max_prompt_length is None else max_prompt_length
    encoder = PairEncoder(tokenizer, max_length=max_length, max_prompt_length=prompt_limit)
    prompt_ids, response_ids, cut = [], [], 0
    for prompt, response in zip(prompts, responses):
        ids = tokenizer(encoder.render_prompt(prompt), add_special_tokens=False)["input_ids"][-prompt_limit:]
        rendered = encoder.render_response(prompt, response) if response else ""
        resp = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        cut += len(resp) > max_length - len(ids)
        prompt_ids.append(tuple(ids))
        response_ids.append(tuple(resp[: max_length - len(ids)]))
    input_ids, attention_mask, _ = pad_sequences(prompt_ids, response_ids, tokenizer.pad_token_id)
    return input_ids, attention_mask, cut


def _warn_cut(cut: int, total: int, max_length: int) -> None:
    if cut:
        logger.warning("reward model scoring: %d of %d response(s) cut to fit max_length=%d (prompt + response), "
                       "so scored at the last kept token, mid-answer, not at the end", cut, total, max_length)


@torch.no_grad()
def score_texts(model: ScalarRewardModel, tokenizer: Any, prompts: Sequence[tuple[Message, ...]],
                responses: Sequence[str], batch_size: int = 8, *, max_length: int = DEFAULT_LENGTHS["max_length"],
                max_prompt_length: int = DEFAULT_LENGTHS["max_prompt_length"]) -> list[float]:  # fmt: skip
    """One score per (prompt, response), encoded with the lengths the model was trained with (pass
    ``**scoring_lengths(meta)``); responses cut to fit are counted in one warning per call."""
    device = next(model.parameters()).device
    scores: list[float] = []
    cut = 0
    for start in range(0, len(prompts), batch_size):
        ids, mask, batch_cut = _encode(tokenizer, prompts[start:start + batch_size],
                                       responses[start:start + batch_size], max_length, max_prompt_length)
        cut += batch_cut
        scores.extend(model(ids.to(device), mask.to(device)).tolist())
    _warn_cut(cut, len(prompts), max_length)
    return scores

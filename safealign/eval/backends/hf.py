"""Local Hugging Face causal LM backend: batched generation with left padding and the chat template.

Conversations are sorted by prompt length and generated ``batch_size`` at a time. With sampling and a seed per
conversation (``params.seeds``, as the evaluation passes its attempts'), each row draws its tokens with a
``torch.Generator`` of its own seeded with its seed (:class:`_RowSampler`): a conversation's sample depends on
its seed and prompt alone, not on its place, its batch or the call's other prompts, as vLLM and the HTTP
backend seed each request (up to the rounding a longer left padding brings to a row's logits). Without
``seeds``, each batch is drawn from one torch stream seeded with ``request_seed(params.seed, start)``, ``start``
the batch's offset in that sorted order (:func:`safealign.eval.backends.base.request_seed`): the rows of a batch
differ as successive draws of the stream, batches differ from each other (two identical conversations differ
even with ``batch_size=1``), and a re-run of the same call draws the same samples, but row ``i`` of every call
draws alike and a row's sample depends on the conversations that share its batch.

``generate`` gets an explicit generation config built from :class:`GenerationParams` alone: a model's own
``generation_config`` (top_k, repetition_penalty, min_p, no_repeat_ngram_size, num_beams …) is not applied,
as the vLLM backend's SamplingParams do not apply it either, so the same parameters mean the same
distribution on both. Only its end-of-answer and bos ids are kept (:func:`~.base.eos_ids`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from safealign.eval.backends.base import (
    Conversation,
    GenerationParams,
    decode_answer,
    conversation_seeds,
    eos_ids,
    prompt_limit,
    render_prompt,
    request_seed,
    special_stops,
    stop_ids,
    too_long,
    truncate_at_stop,
)
from safealign.interrupt import raise_if_stop_requested, stop_requested
from safealign.types import Completion

logger = logging.getLogger(__name__)


class _StopFlag(StoppingCriteria):
    """Ends generation at the next token once a stop is requested (SIGTERM), instead of after
    ``max_new_tokens`` more steps; the backend then drops the cut batch."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), stop_requested(), dtype=torch.bool, device=input_ids.device)


class _StopInAnswer(StoppingCriteria):
    """Ends a row once its answer holds a stop string, matching the tokens generated after the prompt only.
    ``generate``'s own ``stop_strings`` match the end of the whole sequence: a prompt ending in "here" and an
    answer starting "f" met the stop string "ef" after one token, an answer then neither holding the stop string
    nor cut at it, and its finish read "length". vLLM and the HTTP APIs match in the generated text alone.
    ``fired`` marks the rows it ended: their finish is "stop" even where the decoded text does not hold the string
    (a special token's text, skipped when decoding: :func:`~.base.special_stops`)."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int) -> None:
        self.matcher = StopStringCriteria(tokenizer, list(stop))
        self.prompt_width = prompt_width  # the left-padded prompts' width: every row's answer starts there
        self.fired: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        hit = self.matcher(input_ids[:, self.prompt_width :], scores, **kwargs)
        self.fired = hit if self.fired is None else self.fired | hit
        return hit


class _RowSampler(LogitsProcessor):
    """Samples each row's next token with that row's own generator, then leaves it the only finite logit, which
    ``generate``'s greedy step picks: ``generate`` samples a whole batch from the one global stream, so a row's draw
    would depend on its place in the batch. The distribution is the one ``generate`` samples from (temperature, then
    top-p, then softmax and a multinomial draw); it costs one small draw per row and step."""

    def __init__(self, seeds: Sequence[int], device: torch.device, temperature: float, top_p: float) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
        self.warpers = LogitsProcessorList(warpers + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(self.warpers(input_ids, scores), dim=-1)
        picked = torch.stack([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators)])
        return torch.full_like(scores, -float("inf")).scatter_(1, picked, 0.0)


# Settings of a model's generation_config that change which tokens come out; none of them is applied here
# (named in a log line when the model sets one), and each is given its neutral value below.
_DISTRIBUTION_KEYS = ("top_k", "top_p", "temperature", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
                      "repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                      "encoder_no_repeat_ngram_size", "bad_words_ids", "sequence_bias", "min_length", "min_new_tokens",
                      "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
                      "exponential_decay_length_penalty", "guidance_scale", "watermarking_config", "num_beams",
                      "num_beam_groups", "diversity_penalty", "penalty_alpha", "dola_layers", "stop_strings",
                      "renormalize_logits", "remove_invalid_values", "do_sample")  # fmt: skip


class _ExplicitGenerationConfig(GenerationConfig):
    """A generation config that ``generate`` uses as given: transformers fills the values a passed config
    leaves unset (None) from the model's ``generation_config`` (``update(defaults_only=True)``); here every
    value is set, and a value left None (no bad words, no forced token …) stays None."""

    def update(self, defaults_only: bool = False, allow_custom_entries: bool = False, **kwargs: Any) -> dict:
        if defaults_only:
            return dict(kwargs)
        return super().update(defaults_only=False, allow_custom_entries=allow_custom_entries, **kwargs)


def explicit_generation_config(tokenizer: Any, model: Any, *, max_new_tokens: int, do_sample: bool,
                               temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                               num_return_sequences: int = 1) -> GenerationConfig:  # fmt: skip
    """The settings given and neutral values for everything else (no repetition penalty, no top-k unless asked,
    one beam), the model's own ``generation_config`` contributing only its end-of-answer and bos ids: what the
    HF backend and online sampling generate with, so a model's shipped decoding defaults never apply unseen.
    No ``stop_strings``: they would match across the prompt's end (the HF backend's stop strings: _StopInAnswer)."""
    model_config = getattr(model, "generation_config", None)
    defaults = getattr(GenerationConfig, "_get_default_generation_params", dict)()
    values: dict[str, Any] = {
        **defaults,
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        # greedy: the sampling values are not used; neutral ones keep "flags ignored" warnings away
        "temperature": temperature if do_sample else 1.0,
        "top_p": top_p if do_sample else 1.0,
        "top_k": top_k if do_sample else defaults.get("top_k", 50),  # 0: off (sampling only)
        "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
        "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
        "max_length": None, "min_length": None,  # max_new_tokens alone sets the length (no clash warnings)
        "num_beams": 1, "num_return_sequences": num_return_sequences,
        "use_cache": True, "output_scores": False, "return_dict_in_generate": False,
        "renormalize_logits": False, "remove_invalid_values": False,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "eos_token_id": sorted(eos_ids(tokenizer, model)) or None,
        "bos_token_id": getattr(model_config, "bos_token_id", None),
        "decoder_start_token_id": getattr(model_config, "decoder_start_token_id", None),
        "stop_strings": None,
    }  # fmt: skip
    return _ExplicitGenerationConfig(**values)


class HFChatModel:
    """Wraps an already-loaded ``(model, tokenizer)``; see :meth:`from_config` to load one."""

    def __init__(self, model: Any, tokenizer: Any, *, system_prompt: str | None = None) -> None:
        from safealign.models.load import pad_with_eos

        self.model = model
        # a tokenizer handed in without a pad token pads with eos, as load_model's do (batches are padded)
        self.tokenizer = pad_with_eos(tokenizer) if tokenizer is not None else None
        self.system_prompt = system_prompt
        self._noted_ignored = False  # the model's own generation settings were named in the log

    @classmethod
    def from_config(cls, config: Any, *, model: Any = None, tokenizer: Any = None) -> "HFChatModel":
        if model is None or tokenizer is None:
            from safealign.models.load import load_model

            model, tokenizer = load_model(config.name, device=config.device, dtype=config.dtype,
                                          trust_remote_code=config.trust_remote_code,
                                          revision=getattr(config, "revision", None))
        return cls(model, tokenizer, system_prompt=config.system_prompt)

    def render(self, conversation: Conversation, params: GenerationParams) -> str:
        """The exact prompt text the model sees (chat template + generation prompt + any prefill)."""
        return render_prompt(self.tokenizer, conversation, params, self.system_prompt)

    def prompt_tokens(self, conversation: Conversation, params: GenerationParams) -> int:
        """Tokens of the prompt as the model sees it (chat template included)."""
        return self._n_tokens(self.render(conversation, params), params)

    def _n_tokens(self, text: str, params: GenerationParams) -> int:
        # one count for the pre-run bound (prompt_tokens) and the check at generation time
        return len(self.tokenizer(text, add_special_tokens=params.add_special_tokens)["input_ids"])

    def context_length(self) -> int | None:
        from safealign.models.load import context_length

        return context_length(self.model)

    def prompt_limit(self, params: GenerationParams) -> tuple[int | None, str]:
        """The most prompt tokens a generation may start from, and where that number comes from."""
        return prompt_limit(params, self.context_length())

    def generate(self, conversations: Sequence[Conversation], params: GenerationParams) -> list[Completion]:
        prompts = [self.render(c, params) for c in conversations]
        lengths = [self._n_tokens(p, params) for p in prompts]
        out = too_long(lengths, *self.prompt_limit(params), logger)
        # Sort by length so each batch pads little; results are put back in input order.
        order = sorted((i for i in range(len(prompts)) if out[i] is None), key=lambda i: lengths[i])
        seeds = conversation_seeds(params, len(prompts)) if params.seeds is not None else None
        for start in range(0, len(order), max(1, params.batch_size)):
            raise_if_stop_requested()
            idx = order[start : start + params.batch_size]
            batch = self._generate_batch([prompts[i] for i in idx], params, seed=request_seed(params.seed, start),
                                         row_seeds=[seeds[i] for i in idx] if seeds is not None else None)
            for i, completion in zip(idx, batch):
                out[i] = completion
        return out  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[str], params: GenerationParams, *, seed: int,
                        row_seeds: list[int] | None = None) -> list[Completion]:  # fmt: skip
        """``row_seeds``: a seed per prompt, each row sampled with its own (:class:`_RowSampler`); None: the batch
        drawn from the global stream seeded with ``seed``. Greedy decoding uses neither."""
        tok = self.tokenizer
        old_side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=params.add_special_tokens)
        finally:
            tok.padding_side = old_side
        device = next(self.model.parameters()).device
        # only these two: a tokenizer may add more (token_type_ids), which a causal LM's generate refuses
        enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask") if k in enc}
        criteria = self._stopping_criteria(params, enc["input_ids"])  # a refused stop string raises here
        start = time.perf_counter()
        try:
            with torch.no_grad():
                torch.manual_seed(seed)
                output = self.model.generate(**enc, **self._decoding(params, row_seeds, device),
                                             stopping_criteria=criteria)
        except (RuntimeError, ValueError) as exc:  # e.g. CUDA OOM: recorded per attempt, run goes on
            logger.warning("generation failed for a batch of %d: %s", len(prompts), exc)
            return [Completion(text="", error=f"{type(exc).__name__}: {exc}") for _ in prompts]
        raise_if_stop_requested()  # a batch cut short by a stop request is not a completion
        seconds = (time.perf_counter() - start) / len(prompts)
        new_tokens = output[:, enc["input_ids"].shape[1] :]  # (B, T_new)
        fired = next((c.fired for c in criteria if isinstance(c, _StopInAnswer) and c.fired is not None), None)
        return [self._completion(row, params, seconds, prompt=_prompt_ids(enc, r),
                                 stopped=fired is not None and bool(fired[r]))
                for r, row in enumerate(new_tokens)]  # fmt: skip

    def _decoding(self, params: GenerationParams, row_seeds: list[int] | None, device: torch.device) -> dict[str, Any]:
        """``generate``'s decoding arguments: its own greedy or sampling step, or, when sampling with a seed per row,
        the greedy step taking each row's token as :class:`_RowSampler` drew it."""
        if not params.do_sample or row_seeds is None:
            return {"generation_config": self.build_generation_config(params)}
        sampler = _RowSampler(row_seeds, device, params.temperature, params.top_p)
        return {"generation_config": self.build_generation_config(dataclasses.replace(params, do_sample=False)),
                "logits_processor": LogitsProcessorList([sampler])}

    def _stopping_criteria(self, params: GenerationParams, input_ids: torch.Tensor) -> StoppingCriteriaList:
        """A stop request ends the batch; a stop string ends a row whose answer holds it."""
        criteria: list[StoppingCriteria] = [_StopFlag()]
        special_stops(self.tokenizer, params.stop)  # refuses a stop string vLLM could never meet
        if params.stop:
            criteria.append(_StopInAnswer(self.tokenizer, params.stop, input_ids.shape[1]))
        return StoppingCriteriaList(criteria)

    def build_generation_config(self, params: GenerationParams) -> GenerationConfig:
        """What ``generate`` runs with: ``params`` and neutral values for everything else, the model's own
        ``generation_config`` contributing only its end-of-answer and bos ids."""
        self._note_ignored(getattr(self.model, "generation_config", None))
        return explicit_generation_config(self.tokenizer, self.model, max_new_tokens=params.max_new_tokens,
                                          do_sample=params.do_sample, temperature=params.temperature,
                                          top_p=params.top_p)

    def _note_ignored(self, model_config: Any) -> None:
        """Say once which of the model's generation_config settings this backend does not apply."""
        if self._noted_ignored or model_config is None:
            return
        self._noted_ignored = True
        try:
            set_values = model_config.to_diff_dict()
        except (AttributeError, TypeError, ValueError):
            return
        ignored = {k: v for k, v in set_values.items() if k in _DISTRIBUTION_KEYS and v is not None}
        if ignored:
            named = ", ".join(f"{k}={v!r}" for k, v in sorted(ignored.items()))
            logger.info("the model's generation_config sets %s; not applied: generation uses only the generation.* "
                        "settings, as the vllm backend does", named)

    def _completion(self, row: torch.Tensor, params: GenerationParams, seconds: float, *,
                    prompt: Sequence[int] = (), stopped: bool = False) -> Completion:  # fmt: skip
        """The answer of one row: its tokens up to the first end token (not counted), decoded after the row's
        ``prompt`` tokens (:func:`~.base.decode_answer`) and cut at any stop string; finish "stop" when it ended
        there or ``stopped`` (a stop string ended the row), else "length"."""
        tok = self.tokenizer
        ids = row.tolist()
        # generate's own end ids (generation_config's too), the padding, and a stop string that is a special token
        ends = stop_ids(tok, self.model) | set(special_stops(tok, params.stop).values())
        n_tokens = next((i for i, t in enumerate(ids) if t in ends), len(ids))
        text, cut = truncate_at_stop(decode_answer(tok, prompt, ids[:n_tokens]), params.stop)
        finish = "stop" if cut or stopped or n_tokens < len(ids) else "length"
        return Completion(text=text, seconds=seconds, meta={"tokens": n_tokens, "finish": finish})


def _prompt_ids(enc: dict[str, torch.Tensor], row: int) -> list[int]:
    """Row ``row``'s prompt token ids, its left padding left out."""
    ids = enc["input_ids"][row]
    mask = enc.get("attention_mask")
    return (ids[mask[row].bool()] if mask is not None else ids).tolist()

"""Hidden states of chosen decoder layers through forward hooks, never ``output_hidden_states=True``.

Layer numbering follows ``output_hidden_states``: layer ``l`` is the residual stream after ``l`` decoder
blocks, i.e. the input of block ``l`` (``0`` = the embeddings' output) and, for ``l = L`` (the model's
depth), the output of the last block *before* the final norm (``output_hidden_states`` applies the norm
there; nothing else differs). Hooks are registered only on the blocks a caller names, so a forward keeps
exactly the activations autograd needs plus one ``(N, T, H)`` tensor per captured layer.

- :func:`capture_residuals` records layers during a forward; with ``stop=True`` the forward ends right
  after the deepest requested layer (the remaining blocks and the LM head never run). Circuit breakers
  train on truncated models for the same reason (docs/objectives.md).
- :func:`edit_residuals` replaces a layer's residual before the block reads it (ReFAT's ablation).

Used by the hidden-state objectives (``safealign.train.objectives``) and any loss that reads
representations. Works through peft and DDP/FSDP wrappers (the block list is found by walking down).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

from torch import Tensor, nn

from safealign.errors import UserError

Edit = Callable[[Tensor], Tensor]  # (N, T, H) -> (N, T, H)


class _StopForward(Exception):
    """Raised inside a hook to end a forward once every requested layer is captured."""


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder blocks: the ``ModuleList`` with ``config.num_hidden_layers`` entries."""
    config = getattr(model, "config", None)
    depth = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config,
                    "num_hidden_layers", None)
    found = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == depth and len(m) > 0]
    if not found:
        raise UserError(f"cannot find the decoder blocks of {type(model).__name__}: no module list of "
                        f"config.num_hidden_layers={depth!r} blocks; hidden-state objectives need one")
    return found[0]  # modules() is depth-first from the top: the outermost list is the decoder's


def num_layers(model: nn.Module) -> int:
    """The model's depth ``L``; valid residual layers are ``0..L``."""
    return len(decoder_blocks(model))


def check_layers(model: nn.Module, layers: Sequence[int], what: str = "layers") -> list[int]:
    """``layers`` sorted and deduplicated; UserError naming ``what`` when one is outside ``0..L``."""
    depth = num_layers(model)
    bad = [layer for layer in layers if isinstance(layer, bool) or not isinstance(layer, int)
           or not 0 <= layer <= depth]
    if bad or not layers:
        raise UserError(f"{what}: {list(layers)!r} must be a non-empty list of layers in 0..{depth} "
                        f"(this model has {depth} decoder blocks; layer l = the residual after l blocks)")
    return sorted(set(layers))


def _hidden(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden(args: tuple, kwargs: dict, hidden: Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _output_hidden(output) -> Tensor:
    return output if isinstance(output, Tensor) else output[0]


@contextlib.contextmanager
def capture_residuals(model: nn.Module, layers: Sequence[int], *, stop: bool = False) -> Iterator[dict[int, Tensor]]:
    """Record the residual stream at ``layers`` during forwards inside the block: ``{layer: (N, T, H)}``.

    The tensors keep their autograd graph (detach them for a frozen reference). ``stop=True`` ends a forward
    made with :func:`forward_until` at block ``max(layers)`` (that block and the rest never run; a plain
    ``model(...)`` call would see the stop as an exception); with layer ``L`` requested it cannot stop early.
    """
    blocks = decoder_blocks(model)
    wanted = check_layers(model, layers)
    captured: dict[int, Tensor] = {}
    handles = []

    def before(layer: int):
        def hook(module, args, kwargs):
            captured[layer] = _hidden(args, kwargs)
            if stop and layer == wanted[-1]:
                raise _StopForward
        return hook

    def after(module, args, output):
        # never stops: raising after a block's output, inside a gradient-checkpointed call, would leave a
        # graph whose recomputation cannot be trusted; the forward runs on through the norm and the head
        captured[len(blocks)] = _output_hidden(output)

    try:
        for layer in wanted:
            if layer < len(blocks):
                # registered last among pre-hooks so an edit on the same block (ReFAT) is seen first
                handles.append(blocks[layer].register_forward_pre_hook(before(layer), with_kwargs=True))
            else:
                handles.append(blocks[-1].register_forward_hook(after))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def forward_until(model: nn.Module, **inputs) -> None:
    """Run ``model(**inputs)``; a stop raised by :func:`capture_residuals` (``stop=True``) ends it quietly."""
    try:
        model(**inputs, use_cache=False)
    except _StopForward:
        pass


def hidden_states(model: nn.Module, layers: Sequence[int], input_ids: Tensor, attention_mask: Tensor,
                  ) -> dict[int, Tensor]:
    """``{layer: (N, T, H)}`` at ``layers`` from one forward that stops after the deepest of them."""
    with capture_residuals(model, layers, stop=True) as captured:
        forward_until(model, input_ids=input_ids, attention_mask=attention_mask)
    return captured


@contextlib.contextmanager
def edit_residuals(model: nn.Module, edits: dict[int, Edit]) -> Iterator[None]:
    """Replace the residual at layer ``l`` by ``edits[l](h)`` before block ``l`` reads it (``0 <= l < L``)."""
    blocks = decoder_blocks(model)
    for layer in edits:
        if not 0 <= layer < len(blocks):
            raise UserError(f"edit at layer {layer}: only layers 0..{len(blocks) - 1} are read by a block")
    handles = []

    def make(edit: Edit):
        def hook(module, args, kwargs):
            return _with_hidden(args, kwargs, edit(_hidden(args, kwargs)))
        return hook

    try:
        for layer, edit in edits.items():
            # prepend: an edit runs before any capture hook on the same block, whenever either was added
            handles.append(blocks[layer].register_forward_pre_hook(make(edit), with_kwargs=True, prepend=True))
        yield
    finally:
        for handle in handles:
            handle.remove()

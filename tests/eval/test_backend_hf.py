"""The HF backend on a tiny random model: left-padded batches equal single runs, prefill, stops."""

from __future__ import annotations

from safealign.eval.backends import GenerationParams
from safealign.eval.backends.hf import HFChatModel

CONVS = [
    ({"role": "user", "content": "hi"},),
    ({"role": "user", "content": "a much longer question that needs padding in a batch"},),
    ({"role": "user", "content": "q"}, {"role": "assistant", "content": "Sure, here"}),
]


def test_batched_greedy_equals_one_at_a_time(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=6, batch_size=3)
    batched = chat.generate(CONVS, params)
    single = [chat.generate([c], GenerationParams(max_new_tokens=6, batch_size=1))[0] for c in CONVS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.error is None and c.meta["tokens"] <= 6 for c in batched)
    assert tiny_tokenizer.padding_side == "right"  # restored after generation


def test_render_prefill_system_prompt_and_raw_mode(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer, system_prompt="Be safe.")
    text = chat.render(CONVS[2], GenerationParams())
    assert (
        text
        == "<|im_start|>system\nBe safe.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nSure, here"
    )
    raw = chat.render(({"role": "user", "content": "[INST] classify [/INST]"},), GenerationParams(chat_template=False))
    assert raw == "[INST] classify [/INST]"


def test_sampling_is_seeded_and_stop_strings_cut(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    sampled = GenerationParams(max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)
    assert chat.generate(CONVS[:1], sampled)[0].text == chat.generate(CONVS[:1], sampled)[0].text
    full = chat.generate(CONVS[:1], GenerationParams(max_new_tokens=8))[0].text
    stop = full[2:4]
    cut = chat.generate(CONVS[:1], GenerationParams(max_new_tokens=8, stop=(stop,)))[0]
    assert stop not in cut.text and full.startswith(cut.text) and cut.meta["finish"] == "stop"

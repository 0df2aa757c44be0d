"""The HF backend on a tiny random model: left-padded batches equal single runs, prefill, stops."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from safealign.eval.backends import GenerationParams
from safealign.eval.backends.hf import HFChatModel

from .fakes import coin_model, scripted_model, strip_decoder

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


SAMPLED = GenerationParams(max_new_tokens=8, do_sample=True, temperature=1.5, seed=3)


def test_identical_conversations_differ_across_batches_and_rerun_the_same(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    for batch_size in (1, 2):  # one conversation per batch, or two batches of two
        params = GenerationParams(**{**SAMPLED.__dict__, "batch_size": batch_size})
        texts = [c.text for c in chat.generate([CONVS[0]] * 4, params)]
        assert len(set(texts)) == 4, texts  # batches are not seeded alike
        assert [c.text for c in chat.generate([CONVS[0]] * 4, params)] == texts  # a re-run draws the same


def test_the_models_generation_config_is_not_applied(tiny_tokenizer):
    """Only generation.* decides the decoding, as in vLLM: a model's top_k, repetition_penalty,
    no_repeat_ngram_size, num_beams, min_length, do_sample change nothing."""
    from safealign.models.tiny import tiny_model

    plain = HFChatModel(tiny_model(), tiny_tokenizer)
    configured = tiny_model()
    config = configured.generation_config
    config.top_k, config.repetition_penalty, config.no_repeat_ngram_size = 1, 50.0, 1
    config.num_beams, config.min_length, config.do_sample, config.temperature = 2, 40, True, 0.1
    chat = HFChatModel(configured, tiny_tokenizer)
    greedy = GenerationParams(max_new_tokens=16)
    for params in (greedy, SAMPLED):
        assert [c.text for c in chat.generate(CONVS, params)] == [c.text for c in plain.generate(CONVS, params)]
    built = chat.build_generation_config(SAMPLED)
    assert (built.top_k, built.repetition_penalty, built.no_repeat_ngram_size, built.num_beams) == (0, 1.0, 0, 1)


def test_the_models_end_of_turn_ids_still_end_an_answer(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    params = GenerationParams(max_new_tokens=6)
    prompt = tiny_tokenizer(chat.render(CONVS[0], params), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        first = int(tiny_model(**prompt).logits[0, -1].argmax())  # the greedy answer's first token
    assert chat.generate(CONVS[:1], params)[0].meta["tokens"] == 6
    tiny_model.generation_config.eos_token_id = [first]  # e.g. a chat model's <|end|>, listed only there
    [cut] = chat.generate(CONVS[:1], params)
    assert cut.text == "" and cut.meta == {"tokens": 0, "finish": "stop"}


def test_extra_tokenizer_outputs_are_not_passed_to_generate(tiny_model):
    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]  # as BERT-style tokenizers
    assert "token_type_ids" in tokenizer(["hi"], return_tensors="pt")
    out = HFChatModel(tiny_model, tokenizer).generate(CONVS, GenerationParams(max_new_tokens=4, batch_size=3))
    assert all(c.error is None and c.meta["tokens"] > 0 for c in out)


def alphabet_model(model, tokenizer):
    """``model`` made to answer greedily with the letter after its last token's (``a`` after anything else):
    a prompt ending in "here" is answered "fghij…", a known answer to match stop strings against."""
    import string

    ids = tokenizer.convert_tokens_to_ids(list(string.ascii_lowercase))
    following = torch.full((len(tokenizer),), ids[0])
    following[ids[:-1]] = torch.tensor(ids[1:])

    def force(module, args, kwargs, output):
        output.logits[:, -1].scatter_(1, following[kwargs["input_ids"][:, -1]][:, None], 1e4)
        return output

    model.register_forward_hook(force, with_kwargs=True)
    return model


def test_a_stop_string_matches_in_the_answer_only(tiny_model, tiny_tokenizer):
    """The prompt ends in "Sure, here" and the answer is "fghijklm": "ef" spans the two, so it is no stop (vLLM and
    the HTTP APIs match stop strings in the generated text only); "hi" is in the answer, which is cut before it."""
    chat = HFChatModel(alphabet_model(tiny_model, tiny_tokenizer), tiny_tokenizer)
    longer = ({"role": "user", "content": "q"}, {"role": "assistant", "content": "no"})  # answered "pqrstuvw"
    for batch_size in (1, 2):
        params = GenerationParams(max_new_tokens=8, batch_size=batch_size)
        [full] = chat.generate(CONVS[2:], params)
        assert (full.text, full.meta) == ("fghijklm", {"tokens": 8, "finish": "length"})
        across = chat.generate([CONVS[2], longer], dataclasses.replace(params, stop=("ef", "ref", "op")))
        assert [(c.text, c.meta) for c in across] == [("fghijklm", {"tokens": 8, "finish": "length"}),
                                                      ("pqrstuvw", {"tokens": 8, "finish": "length"})]
        inside = chat.generate([CONVS[2], longer], dataclasses.replace(params, stop=("ef", "hi", "rs")))
        assert [(c.text, c.meta["finish"]) for c in inside] == [("fg", "stop"), ("pq", "stop")]


def test_a_stop_string_that_is_a_special_token_ends_the_answer_there(tiny_model, tiny_tokenizer):
    """The answer "Hi<|im_start|>userx": the text is decoded without special tokens, so the stop string
    "<|im_start|>" is never in it; the answer still ends at that token, its finish "stop" (not "length", which
    reads as cut at max_new_tokens), the token not counted, as eos is not (vLLM: the string is a stop token)."""
    script = tiny_tokenizer.convert_tokens_to_ids(["H", "i", "<|im_start|>", "u", "s", "e", "r", "x"])
    chat = HFChatModel(scripted_model(tiny_model, script), tiny_tokenizer)
    params = GenerationParams(max_new_tokens=8, batch_size=2)
    [plain] = chat.generate(CONVS[:1], params)
    assert (plain.text, plain.meta) == ("Hiuserx", {"tokens": 8, "finish": "length"})
    stop = dataclasses.replace(params, stop=("<|im_start|>",))
    for convs in (CONVS[:1], CONVS[:2]):  # the longest row of its batch, alone or beside another
        cut = chat.generate(convs, stop)
        assert [(c.text, c.meta) for c in cut] == [("Hi", {"tokens": 2, "finish": "stop"})] * len(convs)


def test_a_stop_string_holding_a_special_token_and_more_text_is_refused(tiny_model, tiny_tokenizer):
    """vLLM matches stop strings in text decoded without special tokens, where "<|im_end|>\\n" never occurs; the
    hf backend would match it in the tokens: refused on both rather than stop on one backend only."""
    from safealign.errors import UserError

    chat = HFChatModel(tiny_model, tiny_tokenizer)
    with pytest.raises(UserError, match=r"generation\.stop.*'<\|im_end\|>\\n'.*<\|im_end\|>"):
        chat.generate(CONVS[:1], GenerationParams(max_new_tokens=2, stop=("END", "<|im_end|>\n")))


@pytest.mark.parametrize("decoder", ["metaspace", "strip"])
def test_a_prefill_continuation_keeps_its_leading_space(decoder):
    """A SentencePiece-style tokenizer decodes "▁is ▁the" alone as "is the"; after the prefill "Sure, here" the
    continuation is " is the" (as vLLM decodes it, with the prompt before it): judges read "Sure, here is the"."""
    from safealign.models.tiny import tiny_model

    from .fakes import bpe_tokenizer

    tokenizer = bpe_tokenizer(metaspace=True)
    tokenizer = strip_decoder(tokenizer) if decoder == "strip" else tokenizer
    script = tokenizer.convert_tokens_to_ids(["▁is", "▁the", "▁thin", "g", "<|im_end|>"])
    assert tokenizer.decode(script[:4]) == "is the thing"  # the first token's space is lost when decoded alone
    chat = HFChatModel(scripted_model(tiny_model(vocab_size=len(tokenizer)), script), tokenizer)
    [c] = chat.generate([CONVS[2]], GenerationParams(max_new_tokens=8))
    assert (c.text, c.meta) == (" is the thing", {"tokens": 4, "finish": "stop"})


def test_byte_level_answers_decode_as_they_did(tiny_tokenizer):
    """Decoding with the prompt's last tokens before the answer changes nothing for byte-level BPE (the tiny
    model's, GPT-2's, SmolLM2's): every answer text, broken UTF-8 and special tokens inside it included, is the
    answer's tokens decoded alone, as recorded greedy answers were."""
    import random

    from safealign.eval.backends.base import decode_answer

    from .fakes import bpe_tokenizer

    gpt2 = bpe_tokenizer()
    cleaned = bpe_tokenizer()
    cleaned.clean_up_tokenization_spaces = True  # GPT-2's own setting: " ." -> "." and the like
    rng = random.Random(0)
    texts = ["Sure, here", "x", "q ", "é", "日本語", "a 🙂", "don", "Tell me the thing.", "! !", ""]
    for tokenizer in (tiny_tokenizer, gpt2, cleaned):
        for _ in range(300):
            prompt = tokenizer(rng.choice(texts) + rng.choice(texts), add_special_tokens=False)["input_ids"]
            answer = [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(0, 8))]
            if rng.random() < 0.5:
                answer = tokenizer(rng.choice(texts) + rng.choice([" .", " n't", "'s", " !"]),
                                   add_special_tokens=False)["input_ids"] + answer  # fmt: skip
            alone = tokenizer.decode(answer, skip_special_tokens=True)
            assert decode_answer(tokenizer, prompt, answer) == alone, (prompt, answer)


# different lengths: the backend sorts them into other batches as the company and batch size change
QUESTIONS = [({"role": "user", "content": "question " + "x" * (3 * i)},) for i in range(6)]
SEEDED = GenerationParams(max_new_tokens=8, do_sample=True, seed=0, batch_size=4, seeds=tuple(range(100, 106)))


def test_a_conversations_sample_follows_its_own_seed_not_its_place(tiny_model, tiny_tokenizer):
    chat = HFChatModel(coin_model(tiny_model, tiny_tokenizer, p_yes=0.5), tiny_tokenizer)
    texts = [c.text for c in chat.generate(QUESTIONS, SEEDED)]
    assert len(set(texts)) == len(texts), texts  # every row draws its own numbers
    order = [5, 2, 0, 4, 1, 3]  # other places, other batches, another batch size: the same samples
    moved = dataclasses.replace(SEEDED, batch_size=3, seeds=tuple(SEEDED.seeds[i] for i in order))
    assert [c.text for c in chat.generate([QUESTIONS[i] for i in order], moved)] == [texts[i] for i in order]
    alone = dataclasses.replace(SEEDED, batch_size=1, seeds=(SEEDED.seeds[3],))
    assert chat.generate([QUESTIONS[3]], alone)[0].text == texts[3]
    # the next call's rows, with their own seeds, do not replay this call's pattern (positions 0..5 again)
    other = chat.generate(QUESTIONS, dataclasses.replace(SEEDED, seeds=tuple(range(200, 206))))
    assert all(a != b for a, b in zip(texts, (c.text for c in other)))


def test_per_row_sampling_draws_from_the_tempered_nucleus(tiny_model, tiny_tokenizer):
    """P("Y") = 0.1: about a tenth of the draws at temperature 1, more at temperature 3 (0.32), none once top_p
    0.85 leaves "N" (0.9) alone, as generate's own sampling does."""
    chat = HFChatModel(coin_model(tiny_model, tiny_tokenizer), tiny_tokenizer)
    many = [QUESTIONS[0]] * 64

    def share(**settings) -> float:
        params = dataclasses.replace(SEEDED, batch_size=16, seeds=tuple(range(64)), **settings)
        return sum(c.text.count("Y") for c in chat.generate(many, params)) / (64 * 8)

    assert 0.06 < share() < 0.14
    assert 0.25 < share(temperature=3.0) < 0.40
    assert share(top_p=0.85) == 0.0


def test_greedy_ignores_seeds_and_a_seed_per_conversation_is_checked(tiny_model, tiny_tokenizer):
    chat = HFChatModel(tiny_model, tiny_tokenizer)
    greedy = GenerationParams(max_new_tokens=6, batch_size=2)
    plain = [c.text for c in chat.generate(CONVS, greedy)]
    assert [c.text for c in chat.generate(CONVS, dataclasses.replace(greedy, seeds=(1, 2, 3)))] == plain
    with pytest.raises(ValueError, match="2 sampling seeds for 3 conversations"):
        chat.generate(CONVS, dataclasses.replace(SEEDED, seeds=(1, 2)))


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tiny_model):
    from safealign.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = None  # as Llama's and Mistral's ship
    chat = HFChatModel(tiny_model, tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    out = chat.generate(CONVS, GenerationParams(max_new_tokens=3, batch_size=3))
    assert all(c.error is None for c in out), out

"""A separate reference (``reference.model``) or distillation teacher scores the policy's token ids, so it must
share the policy's tokenizer: another tokenizer of the same size would read other words into the same ids and
give meaningless log-probs silently, and a smaller vocabulary fails with a bare IndexError mid-run."""

from __future__ import annotations

import pytest
from safealign.errors import UserError
from safealign.models.tiny import CHATML_TEMPLATE, tiny_model, tiny_tokenizer
from safealign.train.reference import check_same_tokenizer
from safealign.train.run import run_training

from test_trainer import tiny_config


def other_template():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = CHATML_TEMPLATE.replace("'\n' + message['content']", "': ' + message['content']")
    return tokenizer


def test_the_same_tokenizer_passes():
    check_same_tokenizer("reference.model 'x'", tiny_model(seed=1), tiny_tokenizer(), tiny_model(), tiny_tokenizer())


def test_another_tokenizer_of_the_same_size_is_named():
    reversed_ids = tiny_tokenizer(reversed_alphabet=True)
    assert len(reversed_ids) == len(tiny_tokenizer())
    with pytest.raises(UserError, match="'x' does not share the policy's tokenizer: .*splits the probe"):
        check_same_tokenizer("reference.model 'x'", tiny_model(seed=1), reversed_ids, tiny_model(), tiny_tokenizer())


def test_another_template_or_end_of_sequence_with_the_same_ids_is_logged_not_refused(caplog):
    """A base and an instruct checkpoint of one family share ids but not eos or template: the reference scores the
    policy's rendering, so that is worth a warning, not a refusal."""
    other = other_template()
    other.eos_token = "<|endoftext|>"
    with caplog.at_level("WARNING", logger="safealign.train.reference"):
        check_same_tokenizer("reference.model 'x'", tiny_model(seed=1), other, tiny_model(), tiny_tokenizer())
    assert "end-of-sequence id" in caplog.text and "chat template renders a conversation differently" in caplog.text


def test_a_smaller_vocabulary_is_named_even_without_tokenizers():
    with pytest.raises(UserError, match="output vocabulary has 100 tokens, the policy's 259"):
        check_same_tokenizer("reference.model 'x'", tiny_model(vocab_size=100), None, tiny_model())



def test_a_padded_output_vocabulary_passes_only_where_the_caller_folds_the_extra_rows():
    """Distillation folds a teacher's ids past the student's rows into the remaining bucket, so a teacher with the
    same tokenizer and more output rows (padding) passes there; a reference scoring log-probs, or a smaller
    vocabulary, is still refused."""
    teacher = tiny_model(seed=1)
    teacher.resize_token_embeddings(teacher.config.vocab_size + 64)
    with pytest.raises(UserError, match="output vocabulary has 323 tokens, the policy's 259"):
        check_same_tokenizer("reference.model 'x'", teacher, tiny_tokenizer(), tiny_model(), tiny_tokenizer())
    check_same_tokenizer("params.teacher 'x'", teacher, tiny_tokenizer(), tiny_model(), tiny_tokenizer(),
                         larger_output=True)
    with pytest.raises(UserError, match="output vocabulary has 100 tokens, the policy's 259"):
        check_same_tokenizer("params.teacher 'x'", tiny_model(vocab_size=100), tiny_tokenizer(), tiny_model(),
                             tiny_tokenizer(), larger_output=True)

@pytest.mark.parametrize("mode", ["cache", "live"])
@pytest.mark.parametrize("case", ["other tokenizer", "small vocabulary"])
def test_training_refuses_a_reference_model_with_another_tokenizer(tmp_path, pairs_file, case, mode):
    folder = tmp_path / "ref"
    if case == "other tokenizer":
        tiny_model(seed=1).save_pretrained(folder)
        tiny_tokenizer(reversed_alphabet=True).save_pretrained(folder)
    else:
        tiny_model(vocab_size=100, seed=1).save_pretrained(folder)
        tiny_tokenizer().save_pretrained(folder)
    config = tiny_config(tmp_path, pairs_file, max_steps=1)
    config.reference.model = str(folder)
    config.reference.mode = mode
    with pytest.raises(UserError, match=f"reference.model '{folder}' does not share the policy's tokenizer"):
        run_training(config)
    assert not (tmp_path / "refcache").exists() or not any((tmp_path / "refcache").glob("*.safetensors"))


def test_a_distillation_teacher_with_another_tokenizer_is_refused(tmp_path, pairs_file):
    from safealign.train.config import ObjectiveConfig

    folder = tmp_path / "teacher"
    tiny_model(seed=1).save_pretrained(folder)
    tiny_tokenizer(reversed_alphabet=True).save_pretrained(folder)
    config = tiny_config(tmp_path, pairs_file, max_steps=1)
    config.objective = ObjectiveConfig(name="dckd", params={"teacher": str(folder)})
    with pytest.raises(UserError, match="params.teacher .* does not share the policy's tokenizer"):
        run_training(config)

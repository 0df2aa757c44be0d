"""Response-quality flags (safealign.eval.helpfulness.quality) on fixed strings, garbage included."""

from __future__ import annotations

import pytest

from safealign.eval.helpfulness.quality import (
    answer_flags, is_off_language, is_repetitive, latin_share, record_flags, repeated_share, summarize_quality,
)


def test_empty_and_whitespace_only_answers_are_empty_and_nothing_else():
    for text in ("", "  \n\t "):
        assert answer_flags(text, "length") == {"empty": True, "truncated": False, "repetitive": False,
                                                "off_language": False}


def test_truncated_means_hit_the_limit_without_sentence_punctuation():
    assert answer_flags("Use applesauce or a flax egg", "length")["truncated"] is True
    assert answer_flags("Use applesauce or a flax egg.", "length")["truncated"] is False  # ended at the limit
    assert answer_flags("Use applesauce or a flax egg", "stop")["truncated"] is False  # stopped by itself
    assert answer_flags("Use applesauce or a flax egg", None)["truncated"] is None  # unknown: unscored


def test_repetition_share_arithmetic():
    # "a b c" three times = 9 tokens, 6 four-grams: (a b c a) (b c a b) (c a b c) then the same 3 again
    # -> 3 of 6 repeat an earlier one = 0.5
    assert repeated_share("a b c a b c a b c") == pytest.approx(0.5)
    assert repeated_share("one two three") == 0.0  # fewer tokens than n: no 4-grams
    loop = "I am not sure. " * 4  # 5 tokens per sentence (punctuation counts), 20 tokens, 17 four-grams
    # distinct four-grams: the 5 rotations of the sentence -> 12 of 17 repeat = 0.706 >= 0.5
    assert repeated_share(loop) == pytest.approx(12 / 17)
    assert is_repetitive(loop) is True
    assert is_repetitive("!!!!!!!!!!!!!!!!") is True  # 16 punctuation tokens, 13 identical 4-grams: 12/13 repeat
    prose = "Ask for a meeting, bring numbers on your results, name a figure and listen to the answer."
    assert repeated_share(prose) == 0.0 and is_repetitive(prose) is False
    assert is_repetitive("a b c a b c a b c") is False  # 9 tokens: below the 12-token minimum


def test_off_language_is_the_share_of_latin_letters():
    assert latin_share("Café au lait") == 1.0  # é is LATIN SMALL LETTER E WITH ACUTE
    assert latin_share("123 !?") is None
    assert is_off_language("Я не знаю, как это сделать") is True  # 20 Cyrillic letters, 0 Latin
    assert is_off_language("Use a flax egg: 1 tbsp ground flax + 3 tbsp water.") is False
    assert is_off_language("Да") is False  # 2 letters: too short to tell
    # "helloworld" = 10 Latin letters + 15 CJK characters (alphabetic too): 10/25 = 0.4 < 0.5
    assert latin_share("hello world! 你好世界你好世界你好世界你好世") == pytest.approx(10 / 25)
    assert is_off_language("hello world! 你好世界你好世界你好世界你好世") is True


def test_garbage_answer_gets_several_flags():
    garbage = "ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ ﾐﾐﾐﾐ"
    assert answer_flags(garbage, "length") == {"empty": False, "truncated": True, "repetitive": True,
                                               "off_language": True}


def test_failed_generation_is_unscored_and_the_summary_counts_rates_per_flag():
    records = [
        {"id": "a", "completion": "", "error": None, "finish": "stop"},
        {"id": "b", "completion": "Mix flour and", "error": None, "finish": "length"},
        {"id": "c", "completion": "", "error": "boom", "finish": None},
        {"id": "b", "completion": "Mix flour and water.", "error": None, "finish": "stop"},  # retried: counts
        {"id": "z", "completion": "", "error": None, "finish": "stop"},  # not asked: left out
    ]
    assert record_flags(records[2]) == dict.fromkeys(("empty", "truncated", "repetitive", "off_language"))
    summary = summarize_quality(records, ["a", "b", "c", "d"])
    # a: empty; b (latest): clean; c: unscored; d: missing
    assert summary.flags["empty"].rate == 0.5 and summary.flags["empty"].n == 2
    assert summary.flags["empty"].unscored == 1 and summary.missing == 1
    assert summary.flags["truncated"].rate == 0.0 and summary.flags["empty"].ci95 is not None
    assert set(summary.rules) == {"truncated", "repetitive", "off_language"}
    assert type(summary).from_json(summary.to_json()) == summary

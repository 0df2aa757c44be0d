"""Preference formats: detection, parsing, column mapping, every drop reason and the hard errors."""

from __future__ import annotations

import json

import pytest

from safealign.data.formats import FORMATS, DroppedRow, load_preferences
from safealign.types import PreferencePair, UnpairedExample


def write(tmp_path, records, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def drops(result):
    return [(d.row, d.field, d.reason) for d in result.dropped]


# --------------------------------------------------------------------------- each format
def test_standard(tmp_path):
    path = write(
        tmp_path, [{"prompt": "How do I bake bread?", "chosen": "Knead it.", "rejected": "No.", "harmful": "0"}]
    )
    result = load_preferences(path)
    assert (result.format, result.rows, result.dropped) == ("standard", 1, [])
    assert result.items == [
        PreferencePair((user("How do I bake bread?"),), "Knead it.", "No.", harmful=False, source=str(path), row=0)
    ]


def test_conversational(tmp_path):
    prompt = [{"role": "system", "content": "Be kind."}, user("Hi"), assistant("Hello"), user("Help me")]
    path = write(tmp_path, [{"prompt": prompt, "chosen": [assistant("Sure")], "rejected": [assistant("No")]}])
    result = load_preferences(path)
    assert result.format == "conversational"
    assert result.items[0].prompt == tuple(prompt)
    assert (result.items[0].chosen, result.items[0].rejected, result.items[0].harmful) == ("Sure", "No", None)


def test_conversational_response_drops(tmp_path):
    rows = [
        {"prompt": [user("a")], "chosen": [assistant("x"), assistant("y")], "rejected": [assistant("z")]},
        {"prompt": [user("a")], "chosen": [user("x")], "rejected": [assistant("z")]},
        {"prompt": [user("a"), assistant("b")], "chosen": [assistant("x")], "rejected": [assistant("z")]},
        {"prompt": [{"role": "tool", "content": "a"}], "chosen": [assistant("x")], "rejected": [assistant("z")]},
        {"prompt": [user("a")], "chosen": "x", "rejected": [assistant("z")]},
        {"prompt": [user("a")], "chosen": [assistant("x")], "rejected": [assistant("z")]},  # a file of drops fails
    ]
    result = load_preferences(write(tmp_path, rows))
    assert [item.row for item in result.items] == [5]
    assert drops(result) == [
        (0, "chosen", "2 assistant messages in one response; expected exactly one"),
        (1, "chosen", "expected assistant messages only, got roles ['user']"),
        (2, "prompt", "the prompt must end with a user message, not 'assistant'"),
        (3, "prompt", "message 0: role 'tool' is not one of system, user, assistant"),
        (4, "chosen", "expected a non-empty list of {role, content} messages, got str 'x'"),
    ]


def test_implicit_message_lists(tmp_path):
    history = [user("q1"), assistant("a1"), user("q2")]
    path = write(tmp_path, [{"chosen": history + [assistant("good")], "rejected": history + [assistant("bad")]}])
    result = load_preferences(path)
    assert result.format == "implicit"
    assert (result.items[0].prompt, result.items[0].chosen, result.items[0].rejected) == (tuple(history), "good", "bad")


def test_implicit_hh_transcripts(tmp_path):
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke."
    rows = [
        {
            "chosen": shared + "\n\nAssistant: Why did the chicken cross the road?",
            "rejected": shared + "\n\nAssistant: No.",
        },
        # the first turn may start the text without blank lines; text before it becomes a system message
        {"chosen": "Human: a\n\nAssistant: b", "rejected": "Human: a\n\nAssistant:  c "},
        {"chosen": "Rules.\n\nHuman: a\n\nAssistant: b", "rejected": "Rules.\n\nHuman: a\n\nAssistant: c"},
    ]
    result = load_preferences(write(tmp_path, rows))
    assert result.dropped == []
    first, second, third = result.items
    assert first.prompt == (user("Hi there"), assistant("Hello!"), user("Tell me a joke."))
    assert (first.chosen, first.rejected) == ("Why did the chicken cross the road?", "No.")
    assert (second.prompt, second.chosen, second.rejected) == ((user("a"),), "b", "c")
    assert third.prompt == ({"role": "system", "content": "Rules."}, user("a"))


def test_implicit_drops(tmp_path):
    rows = [
        # shared prefix ends mid-turn: the rejected transcript's history differs
        {
            "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
            "rejected": "\n\nHuman: a\n\nAssistant: e",
        },
        {"chosen": "\n\nHuman: a\n\nAssistant: ", "rejected": "\n\nHuman: a\n\nAssistant: e"},
        {"chosen": "just some text", "rejected": "\n\nHuman: a\n\nAssistant: e"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: more", "rejected": "\n\nHuman: a\n\nAssistant: e"},
        {"chosen": "\n\nAssistant: b", "rejected": "\n\nAssistant: e"},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": [user("a"), assistant("e")]},
        {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: e"},  # one kept
    ]
    result = load_preferences(write(tmp_path, rows))
    assert [item.row for item in result.items] == [6]
    assert drops(result) == [
        (0, "rejected", "chosen and rejected diverge before their final assistant turn (shared prefix ends mid-turn)"),
        (1, "chosen", "empty response"),
        (2, "chosen", "unparseable transcript: no '\\n\\nHuman:' / '\\n\\nAssistant:' turns"),
        (3, "chosen", "conversation does not end with an assistant turn"),
        (4, "chosen", "no user turn directly before the final assistant turn"),
        (5, "rejected", "chosen and rejected must both be transcripts or both message lists"),
    ]


def test_unpaired_labels(tmp_path):
    rows = [
        {"prompt": "q", "completion": "a", "label": True},
        {"prompt": "q", "completion": "a", "label": "false"},
        {"prompt": "q", "completion": [assistant("a")], "label": 1},
        {"prompt": "q", "completion": "a", "label": "0"},
        {"prompt": "q", "completion": "a", "label": "maybe"},
        {"prompt": "q", "completion": "a", "label": None},
    ]
    result = load_preferences(write(tmp_path, rows))
    assert result.format == "unpaired"
    assert all(isinstance(item, UnpairedExample) for item in result.items)
    assert [(i.completion, i.label) for i in result.items] == [("a", True), ("a", False), ("a", True), ("a", False)]
    assert drops(result) == [
        (4, "label", "expected a boolean (true/false/1/0), got str 'maybe'"),
        (5, "label", "missing value"),
    ]


# --------------------------------------------------------------------------- harmful flag
def test_harmful_row_flag_and_dataset_default(tmp_path):
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "harmful": True},
        {"prompt": "q", "chosen": "a", "rejected": "b", "harmful": "false"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "b", "harmful": ""},
        {"prompt": "q", "chosen": "a", "rejected": "b", "harmful": "sometimes"},
    ]
    path = write(tmp_path, rows)
    assert [i.harmful for i in load_preferences(path).items] == [True, False, None, None]
    result = load_preferences(path, harmful=True)
    assert [i.harmful for i in result.items] == [True, False, True, True]
    assert drops(result) == [(4, "harmful", "expected a boolean (true/false/1/0), got str 'sometimes'")]


# --------------------------------------------------------------------------- drops
def test_standard_drop_reasons(tmp_path):
    rows = [
        {"prompt": "q", "chosen": "a"},
        {"prompt": "q", "chosen": 5, "rejected": "b"},
        {"prompt": "q", "chosen": "  ", "rejected": "b"},
        {"prompt": "q", "chosen": "same", "rejected": "same "},
        {"prompt": "", "chosen": "a", "rejected": "b"},
        {"prompt": ["q"], "chosen": "a", "rejected": "b"},
        {"prompt": "q", "chosen": "a", "rejected": "b"},
    ]
    result = load_preferences(write(tmp_path, rows), format="standard")
    assert (result.rows, len(result.items)) == (7, 1)
    assert result.items[0].row == 6
    assert drops(result) == [
        (0, "rejected", "missing value"),
        (1, "chosen", "expected a string, got int 5"),
        (2, "chosen", "empty response"),
        (3, "rejected", "chosen and rejected are identical"),
        (4, "prompt", "empty text"),
        (5, "prompt", "expected a string, got list ['q']"),
    ]
    assert result.dropped[0] == DroppedRow(str(tmp_path / "d.jsonl"), 0, "rejected", "missing value")
    assert result.drop_counts()["chosen: empty response"] == 1


def test_limit(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    assert [i.row for i in load_preferences(write(tmp_path, rows), limit=2).items] == [0, 1]


# --------------------------------------------------------------------------- column mapping
def test_column_mapping(tmp_path):
    path = write(tmp_path, [{"question": "q", "good": "a", "bad": "b", "is_harmful": 1}])
    result = load_preferences(
        path, columns={"prompt": "question", "chosen": "good", "rejected": "bad", "harmful": "is_harmful"}
    )
    assert result.format == "standard"
    assert (result.items[0].prompt, result.items[0].chosen, result.items[0].rejected, result.items[0].harmful) == (
        (user("q"),), "a", "b", True
    )


def test_column_mapping_drop_names_the_user_column(tmp_path):
    path = write(
        tmp_path, [{"question": "q", "chosen": "a", "rejected": "b"}, {"question": 3, "chosen": "a", "rejected": "b"}]
    )
    result = load_preferences(path, columns={"prompt": "question"})
    assert drops(result) == [(1, "question", "expected a string, got int 3")]


def test_bad_column_mapping(tmp_path):
    path = write(tmp_path, [{"question": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(
        ValueError, match=r"unknown field 'promt'; valid fields: prompt, chosen, rejected, completion, label, harmful"
    ):
        load_preferences(path, columns={"promt": "question"})
    with pytest.raises(
        ValueError, match=r"column mapping prompt=query: no column 'query'; columns seen: question, chosen, rejected"
    ):
        load_preferences(path, columns={"prompt": "query"})


# --------------------------------------------------------------------------- hard errors
def test_undetectable_format_names_columns_and_needs(tmp_path):
    path = write(tmp_path, [{"instruction": "q", "output": "a"}])
    with pytest.raises(ValueError) as info:
        load_preferences(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot detect the data format; columns seen: instruction, output.")
    for needs in (
        "standard: prompt, chosen, rejected",
        "implicit: chosen, rejected",
        "unpaired: prompt, completion, label",
    ):
        assert needs in message


def test_explicit_format_errors(tmp_path):
    path = write(tmp_path, [{"prompt": "q", "chosen": "a"}])
    with pytest.raises(ValueError, match=f"unknown format 'dpo'; valid formats: auto, {', '.join(FORMATS)}$"):
        load_preferences(path, format="dpo")
    with pytest.raises(
        ValueError, match=r"format 'standard' needs columns prompt, chosen, rejected \(strings\); missing: rejected"
    ):
        load_preferences(path, format="standard")


def test_unreadable_and_empty(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON"):
        load_preferences(bad)
    with pytest.raises(ValueError, match=r"empty\.jsonl: no rows; cannot detect the data format"):
        load_preferences(write(tmp_path, [], name="empty.jsonl"))


def test_csv_standard(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('prompt,chosen,rejected,harmful\n"Say ""hi""",hi,no,yes\n')
    result = load_preferences(path)
    assert result.items[0] == PreferencePair((user('Say "hi"'),), "hi", "no", True, str(path), 0)


# --------------------------------------------------------------------------- loss inputs (docs/loss-inputs.md)
def test_joint_format_is_detected_and_keeps_a_prompt_per_response(tmp_path):
    path = write(tmp_path, [
        {"chosen_prompt": "Give me a pasta recipe.", "chosen": "Boil pasta.", "rejected_prompt": "What is 2 + 2?",
         "rejected": "I won't answer that."},
        {"chosen_prompt": [user("Hi?")], "chosen": [assistant("Hello.")], "rejected_prompt": "Hi?", "rejected": "No."},
        {"chosen_prompt": "A?", "chosen": "Same.", "rejected_prompt": "B?", "rejected": "Same."},
        {"chosen_prompt": "A?", "chosen": "Same.", "rejected_prompt": "A?", "rejected": "Same."},
    ])
    result = load_preferences(path)
    assert result.format == "joint" and "joint" in FORMATS
    cross, same, same_text = result.items
    assert cross.prompt == (user("Give me a pasta recipe."),) and cross.rejected_prompt == (user("What is 2 + 2?"),)
    assert (cross.chosen, cross.rejected) == ("Boil pasta.", "I won't answer that.")
    assert same.rejected_prompt is None  # one prompt: an ordinary pair
    assert same_text.chosen == same_text.rejected and same_text.rejected_prompt == (user("B?"),)
    assert drops(result) == [(3, "rejected", "chosen and rejected are identical")]


def test_joint_format_reads_the_jpo_authors_columns_through_a_mapping(tmp_path):
    path = write(tmp_path, [{"i_chosen": "A?", "r_chosen": "Yes.", "i_reject": "B?", "r_reject": "No."}])
    columns = {"chosen_prompt": "i_chosen", "chosen": "r_chosen", "rejected_prompt": "i_reject", "rejected": "r_reject"}
    [item] = load_preferences(path, columns=columns).items
    got = (item.prompt, item.chosen, item.rejected_prompt, item.rejected)
    assert got == ((user("A?"),), "Yes.", (user("B?"),), "No.")


def test_chosen_scores_are_parsed_on_any_pair_format_and_bad_ones_dropped(tmp_path):
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    path = write(tmp_path, [
        {**good, "chosen_scores": [-1.5, -2]}, good, {**good, "chosen_scores": []},
        {**good, "chosen_scores": [-1.0, float("nan")]}, {**good, "chosen_scores": "-1.0"},
        {**good, "chosen_scores": [True]},
    ])
    result = load_preferences(path)
    assert [item.chosen_scores for item in result.items] == [(-1.5, -2.0), None]
    assert drops(result) == [
        (2, "chosen_scores", "expected a non-empty list of numbers, got list"),
        (3, "chosen_scores", "item 1 is nan, not a finite number"),
        (4, "chosen_scores", "expected a non-empty list of numbers, got float"),  # text is read as JSON
        (5, "chosen_scores", "item 0 is True, not a finite number"),
    ]
    path = write(tmp_path, [{"q": "q", "chosen": "a", "rejected": "b", "aligned": [-3.0]}], name="mapped.jsonl")
    [item] = load_preferences(path, columns={"prompt": "q", "chosen_scores": "aligned"}).items
    assert item.chosen_scores == (-3.0,)


# --------------------------------------------------------------------------- public layouts auto-detected
def test_ultrafeedback_binarized_is_read_as_implicit(tmp_path):
    """A prompt string beside chosen/rejected conversations that repeat the user turn."""
    row = {"prompt": "How do I bake bread?", "prompt_id": "abc",
           "chosen": [user("How do I bake bread?"), assistant("Mix flour...")],
           "rejected": [user("How do I bake bread?"), assistant("Buy it.")], "score_chosen": 8.0}
    result = load_preferences(write(tmp_path, [row, row]))
    assert (result.format, result.dropped) == ("implicit", [])
    assert [(i.prompt, i.chosen, i.rejected) for i in result.items] == [((user("How do I bake bread?"),),
                                                                         "Mix flour...", "Buy it.")] * 2


def test_a_file_whose_every_row_is_dropped_is_an_error_naming_the_reasons(tmp_path):
    rows = [{"prompt": [user("Hi")], "chosen": [user("Hi"), assistant("Hello")], "rejected": [assistant("No")]}] * 2
    path = write(tmp_path, rows)
    with pytest.raises(ValueError, match=r"d\.jsonl: every row \(2\) was dropped as format 'conversational': "
                                         r"chosen: expected assistant messages only, got roles \['user', 'assistant'\] "
                                         r"\(2 rows\)\. Check the format"):
        load_preferences(path, format="conversational")


def test_an_hh_transcript_prompt_in_the_standard_layout_becomes_a_conversation(tmp_path):
    rm_static = {"prompt": "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\nHuman: I'm locked "
                           "out.\n\nAssistant:", "response": " Call a locksmith.", "chosen": " Call a locksmith.",
                 "rejected": " Use a bobby pin like this..."}
    plain = {"prompt": "Human: is this a transcript? No, it does not end like one.", "chosen": " a", "rejected": "b"}
    broken = {"prompt": "Human: hi Assistant:", "chosen": "a", "rejected": "b"}  # no turn marker before Assistant:
    result = load_preferences(write(tmp_path, [rm_static, plain, broken]))
    first, second = result.items
    assert result.format == "standard"
    assert first.prompt == (user("How do I pick a lock?"), assistant("Why do you want to?"), user("I'm locked out."))
    assert (first.chosen, first.rejected) == ("Call a locksmith.", "Use a bobby pin like this...")
    assert (second.prompt, second.chosen) == ((user(plain["prompt"]),), " a")  # not a transcript: as before
    assert drops(result) == [(2, "prompt", "transcript prompt must end with a Human turn and then an empty "
                                           "'\\n\\nAssistant:'")]


def test_chosen_scores_in_a_csv_cell_are_read_as_a_json_list(tmp_path):
    """CSV cells are text: "[-1.0, -2.0]" is the list, an empty cell no scores, and a cell that is no JSON list is a
    dropped row naming the file, row and field (as the judgment format's ``score`` is read from text)."""
    path = tmp_path / "scores.csv"
    path.write_text('prompt,chosen,rejected,chosen_scores\nq,a,b,"[-1.0, -2]"\nq,a,b,\nq,a,b,"[-1.0,"\n'
                    'q,a,b,"[""x""]"\n')
    result = load_preferences(path)
    assert [item.chosen_scores for item in result.items] == [(-1.0, -2.0), None]
    assert result.dropped == [
        DroppedRow(str(path), 2, "chosen_scores", "expected a JSON list of numbers such as [-1.2, -0.8], got '[-1.0,'"),
        DroppedRow(str(path), 3, "chosen_scores", "item 0 is 'x', not a finite number"),
    ]


def test_a_transcript_prompts_copy_at_the_start_of_a_response_is_not_trained_as_the_answer(tmp_path):
    """Standard layout, transcript prompt, whole-transcript responses (each repeats the prompt's turns): the
    answer is the reply after the copy. A response holding further turns is dropped and counted, as the implicit
    format does not train a conversation that does not end with the reply."""
    prompt = "\n\nHuman: How do I pick a lock?\n\nAssistant:"
    rows = [
        {"prompt": prompt, "chosen": prompt + " Call a locksmith.", "rejected": prompt + " Use a pick."},
        {"prompt": prompt, "chosen": prompt + " Call a locksmith.", "rejected": " Use a pick."},
        {"prompt": prompt, "chosen": prompt + " Call one.\n\nHuman: Thanks!\n\nAssistant: Welcome.",
         "rejected": " Use a pick."},
        {"prompt": prompt, "chosen": "Call a locksmith.", "rejected": "\n\nHuman: Hi\n\nAssistant: Hello."},
    ]
    result = load_preferences(write(tmp_path, rows))
    assert [(item.prompt, item.chosen, item.rejected) for item in result.items] == [
        ((user("How do I pick a lock?"),), "Call a locksmith.", "Use a pick.")] * 2
    turns = ("holds a '\\n\\nHuman:' / '\\n\\nAssistant:' turn; after a transcript prompt give the reply only, or "
             "whole conversations without the prompt column (format 'implicit')")
    assert drops(result) == [(2, "chosen", turns), (3, "rejected", turns)]


def test_a_response_holding_transcript_turns_is_dropped_whatever_the_prompt(tmp_path):
    """A plain prompt with a whole-transcript response (or one that goes on into further turns): trained as the
    answer, it would teach the model to write both sides of a conversation. Dropped and counted, as after a
    transcript prompt; a plain response is kept as it was (not stripped)."""
    rows = [
        {"prompt": "How do I pick a lock?", "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help.",
         "rejected": "Use a pick."},
        {"prompt": "How do I pick a lock?", "chosen": "I can't help.",
         "rejected": "Use a pick.\n\nHuman: Thanks!\n\nAssistant: Welcome."},
        {"prompt": "How do I pick a lock?", "chosen": " I can't help.", "rejected": "Use a pick."},
    ]
    result = load_preferences(write(tmp_path, rows))
    assert [(item.row, item.chosen, item.rejected) for item in result.items] == [(2, " I can't help.", "Use a pick.")]
    turns = ("holds a '\\n\\nHuman:' / '\\n\\nAssistant:' turn; give the reply only, or whole conversations "
             "without the prompt column (format 'implicit')")
    assert drops(result) == [(0, "chosen", turns), (1, "rejected", turns)]
    assert result.drop_counts() == {f"chosen: {turns}": 1, f"rejected: {turns}": 1}


def test_an_empty_last_user_turn_is_dropped_in_transcripts_and_conversations(tmp_path):
    """parse_prompt's rule for message lists holds for transcript prompts and the implicit format's histories."""
    rows = [
        {"prompt": "Human: hi\n\nAssistant: hello\n\nHuman: \n\nAssistant:", "chosen": "a", "rejected": "b"},
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "a", "rejected": "b"},
    ]
    result = load_preferences(write(tmp_path, rows))
    assert [item.row for item in result.items] == [1]
    assert drops(result) == [(0, "prompt", "empty text in the last user message")]
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman:  \n\nAssistant: a",
         "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman:  \n\nAssistant: b"},
        {"chosen": [user(" "), assistant("a")], "rejected": [user(" "), assistant("b")]},
        {"chosen": [user("q"), assistant("a")], "rejected": [user("q"), assistant("b")]},
    ]
    result = load_preferences(write(tmp_path, rows, name="implicit.jsonl"), format="implicit")
    assert [item.row for item in result.items] == [2]
    assert drops(result) == [(0, "chosen", "empty text in the last user message"),
                             (1, "chosen", "empty text in the last user message")]

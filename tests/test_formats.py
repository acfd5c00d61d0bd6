"""Parsing model answers: JSON blocks, ideas, "I am done", LaTeX blocks and SEARCH/REPLACE edits."""

import json

import pytest

from base.formats import (
    Edit,
    FormatError,
    Idea,
    is_done,
    parse_edits,
    parse_idea,
    parse_json_block,
    parse_latex_block,
)

IDEA = {
    "name": "margin_dpo",
    "title": "DPO with a margin",
    "hypothesis": "A margin resists over-optimisation.",
    "experiment": "Subtract m from rho.",
    "interestingness": 7,
    "feasibility": 9,
    "novelty": 5,
}
IDEA_JSON = (
    '{"name": "margin_dpo", "title": "DPO with a margin", "hypothesis": "A margin resists over-optimisation.",'
    ' "experiment": "Subtract m from rho.", "interestingness": 7, "feasibility": 9, "novelty": 5}'
)


def format_error(fn, *args) -> str:
    """The message of the FormatError fn(*args) raises, checked to be one line."""
    with pytest.raises(FormatError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    return message


# --- parse_json_block -----------------------------------------------------------------------------------------------


def test_json_fenced_block():
    text = f'Here is my idea.\n\n```json\n{IDEA_JSON}\n```\nThanks.'
    assert parse_json_block(text) == IDEA


def test_json_first_json_block_wins_over_other_blocks():
    text = '```python\nx = {"a": 1}\n```\n```JSON\n{"b": 2}\n```\n```json\n{"c": 3}\n```'
    assert parse_json_block(text) == {"b": 2}


def test_json_unlabelled_fence_accepted_if_it_parses():
    text = 'Some prose.\n```\nnot json at all\n```\n```\n{"a": [1, 2], "b": {"c": null}}\n```'
    assert parse_json_block(text) == {"a": [1, 2], "b": {"c": None}}


def test_json_bare_object_in_prose():
    text = 'THOUGHT: we set {x} aside.\n\nNEW IDEA JSON:\n{"a": 1, "nested": {"b": "}{"}}\nThat is all.'
    assert parse_json_block(text) == {"a": 1, "nested": {"b": "}{"}}


def test_json_unclosed_fence_still_parses():
    assert parse_json_block('```json\n{"a": 1}\n') == {"a": 1}


def test_json_malformed_says_where():
    text = '```json\n{\n  "a": 1,\n  "b": 2,\n}\n```'
    message = format_error(parse_json_block, text)
    assert "```json block at line 4 column 1" in message  # lines count within the block


def test_json_missing_comma_quotes_line():
    text = '{\n  "a": 1\n  "b": 2\n}'
    message = format_error(parse_json_block, text)
    assert "line 3" in message and '"b": 2' in message


def test_json_single_quotes_refused():
    assert "invalid JSON" in format_error(parse_json_block, "```json\n{'a': 1}\n```")


def test_json_non_object_refused():
    assert "list" in format_error(parse_json_block, "```json\n[1, 2]\n```")


def test_json_none_found():
    assert "no JSON object" in format_error(parse_json_block, "I could not think of anything.")


# --- parse_idea --------------------------------------------------------------------------------------------------


def test_idea_plain_and_wrapped():
    assert parse_idea(f"```json\n{IDEA_JSON}\n```") == Idea(**IDEA)
    assert parse_idea(f'```json\n{{"idea": {IDEA_JSON}}}\n```') == Idea(**IDEA)


def test_idea_tolerates_strings_floats_extra_and_capitalised_keys():
    text = ('{"Name": "Margin DPO -- v2!", "Title": "t", "Short Hypothesis": "h", "Experiment": ["a", "b"],'
            ' "Interestingness": "7", "Feasibility": 9.0, "Novelty": "5/10", "Extra": 1}')
    idea = parse_idea(text)
    assert idea.name == "margin_dpo_v2"
    assert (idea.interestingness, idea.feasibility, idea.novelty) == (7, 9, 5)
    assert idea.hypothesis == "h" and idea.experiment == "a\nb"


def test_idea_name_truncated_to_40():
    idea = parse_idea(json.dumps({**IDEA, "name": "x" * 60}))
    assert idea.name == "x" * 40


@pytest.mark.parametrize("field,value", [("novelty", 11), ("feasibility", 0), ("interestingness", "high"),
                                         ("novelty", 7.5), ("novelty", True)])
def test_idea_score_out_of_range(field, value):
    message = format_error(parse_idea, json.dumps({**IDEA, field: value}))
    assert field in message and "1 to 10" in message


def test_idea_empty_name():
    assert "name" in format_error(parse_idea, json.dumps({**IDEA, "name": " -- "}))


def test_idea_missing_fields_listed():
    message = format_error(parse_idea, '{"name": "a", "title": "b"}')
    assert "'hypothesis'" in message and "'novelty'" in message


# --- is_done -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,done", [
    ("I am done", True),
    ("The idea is final.\nI AM DONE.", True),
    ("i am   done", True),
    ("I am not done yet", False),
    ("I am doneness", False),
    ("", False),
])
def test_is_done(text, done):
    assert is_done(text) is done


# --- parse_latex_block -------------------------------------------------------------------------------------------


def test_latex_block():
    text = "Here:\n```latex\n\\section{Method}\nWe use $x$.\n```\nand ```latex\nsecond\n```"
    assert parse_latex_block(text) == "\\section{Method}\nWe use $x$."


def test_tex_block_and_skip_other_languages():
    assert parse_latex_block("```python\nx\n```\n```tex\n\\emph{a}\n```") == "\\emph{a}"


@pytest.mark.parametrize("text,word", [("no block here", "no ```latex"), ("```latex\n\\section{A}", "not closed"),
                                       ("```latex\n\n```", "empty")])
def test_latex_errors(text, word):
    assert word in format_error(parse_latex_block, text)


# --- parse_edits -------------------------------------------------------------------------------------------------

ONE = """I will add a margin.

loss.py
<<<<<<< SEARCH
    return -jax.nn.log_sigmoid(beta * rho)
=======
    return -jax.nn.log_sigmoid(beta * rho) * 0.9
>>>>>>> REPLACE
"""


def test_edit_single_block():
    assert parse_edits(ONE) == [Edit("loss.py", "    return -jax.nn.log_sigmoid(beta * rho)",
                                     "    return -jax.nn.log_sigmoid(beta * rho) * 0.9")]


def test_edit_several_blocks_and_path_styles():
    text = """First:

`loss.py`
```python
<<<<<<< SEARCH
a = 1
=======
a = 2
>>>>>>> REPLACE
```

```python
File: model/net.py
<<<<<<< SEARCH
b = 1

c = 1
=======
>>>>>>> REPLACE
```

**notes.md**:
<<<<<<< SEARCH
=======
# Notes
>>>>>>> REPLACE
"""
    assert parse_edits(text) == [
        Edit("loss.py", "a = 1", "a = 2"),
        Edit("model/net.py", "b = 1\n\nc = 1", ""),
        Edit("notes.md", "", "# Notes"),
    ]


def test_edit_block_right_after_another_reuses_its_path():
    text = ONE + "<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n"
    assert [e.path for e in parse_edits(text)] == ["loss.py", "loss.py"]


def test_edit_no_blocks():
    assert format_error(parse_edits, "I changed loss.py to add a margin.").startswith("no SEARCH/REPLACE blocks found")


@pytest.mark.parametrize("text,missing", [
    ("loss.py\n<<<<<<< SEARCH\na\n", "======="),
    ("loss.py\n<<<<<<< SEARCH\na\n=======\nb\n", ">>>>>>> REPLACE"),
    ("loss.py\n<<<<<<< SEARCH\na\n=======\nb\nloss.py\n<<<<<<< SEARCH\nc\n=======\nd\n>>>>>>> REPLACE\n",
     ">>>>>>> REPLACE"),
])
def test_edit_unterminated(text, missing):
    message = format_error(parse_edits, text)
    assert f"missing its {missing}" in message and "loss.py" in message


def test_edit_without_path_line():
    assert "no file path" in format_error(parse_edits, "<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE")


def test_edit_prose_is_not_a_path():
    text = "Here is the change to the loss:\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE"
    assert "file path alone" in format_error(parse_edits, text)


def test_edit_stray_replace_marker():
    assert "without <<<<<<< SEARCH" in format_error(parse_edits, "loss.py\na\n>>>>>>> REPLACE")

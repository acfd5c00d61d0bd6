"""Applying SEARCH/REPLACE edits to template files, and the static check run before a candidate is executed."""

import pytest

from base.formats import Edit, parse_edits
from scientist.edits import EditError, apply_edits, static_check

LOSS = '''"""A preference loss."""

import jax


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -jax.nn.log_sigmoid(beta * rho)


def helper(x):
    if x > 0:
        return x
    return -x
'''
HARNESS = "def train(loss):\n    return loss\n"
FILES = {"loss.py": LOSS, "harness.py": HARNESS}
EDITABLE = ["loss.py"]


def edit_error(fn, *args) -> str:
    """The message of the EditError fn(*args) raises, checked to be one line."""
    with pytest.raises(EditError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def execute(source: str) -> dict:
    """The namespace left by running source (without importing jax, to stay fast)."""
    namespace: dict = {}
    exec(compile(source, "loss.py", "exec"), namespace)
    return namespace


# --- apply_edits -----------------------------------------------------------------------------------------------------


def test_exact_edit_and_input_untouched():
    files = dict(FILES)
    edits = parse_edits("""loss.py
<<<<<<< SEARCH
    return -jax.nn.log_sigmoid(beta * rho)
=======
    return -jax.nn.log_sigmoid(beta * rho) * 0.9
>>>>>>> REPLACE""")
    out = apply_edits(files, edits, EDITABLE)
    assert "    return -jax.nn.log_sigmoid(beta * rho) * 0.9\n" in out["loss.py"]
    assert out["harness.py"] == HARNESS
    assert files == FILES and out is not files


def test_several_blocks_apply_in_order():
    edits = [
        Edit("loss.py", "beta * rho", "beta * (rho - 1.0)"),
        Edit("loss.py", "(rho - 1.0)", "(rho - 2.0)"),  # sees the result of the first edit
        Edit("loss.py", '"""A preference loss."""', '"""A margin loss."""'),
    ]
    out = apply_edits(FILES, edits, EDITABLE)["loss.py"]
    assert "log_sigmoid(beta * (rho - 2.0))" in out and out.startswith('"""A margin loss."""')


def test_several_files():
    files = {"loss.py": LOSS, "model.py": "W = 1\n", "harness.py": HARNESS}
    edits = [Edit("model.py", "W = 1", "W = 2"), Edit("./loss.py", "import jax", "import jax\nimport jax.numpy as jnp")]
    out = apply_edits(files, edits, ["loss.py", "model.py"])
    assert out["model.py"] == "W = 2\n" and "import jax.numpy as jnp\n" in out["loss.py"]


def test_empty_search_rewrites_whole_file():
    new = "def loss(a, b, c, d, beta):\n    return (a - b) * beta"
    out = apply_edits(FILES, [Edit("loss.py", "", new)], EDITABLE)
    assert out["loss.py"] == new + "\n"


def test_empty_search_creates_editable_file():
    out = apply_edits(FILES, [Edit("notes.md", "", "# Notes")], ["loss.py", "notes.md"])
    assert out["notes.md"] == "# Notes\n"


def test_non_editable_path_refused():
    message = edit_error(apply_edits, FILES, [Edit("harness.py", "return loss", "return None")], EDITABLE)
    assert message == "loss.py is the only file you may edit; harness.py is fixed"
    message = edit_error(apply_edits, FILES, [Edit("harness.py", "a", "b")], ["loss.py", "model.py"])
    assert "loss.py, model.py" in message and "harness.py" in message


def test_missing_file_needs_empty_search():
    assert "does not exist" in edit_error(apply_edits, {}, [Edit("loss.py", "a", "b")], EDITABLE)


def test_ambiguous_search_refused():
    files = {"loss.py": "x = 1\ny = 2\nx = 1\n"}
    message = edit_error(apply_edits, files, [Edit("loss.py", "x = 1", "x = 3")], EDITABLE)
    assert "matches 2 places" in message and "more" in message


def test_ambiguous_tolerant_match_refused():
    files = {"loss.py": "def f():\n    x = 1\n\ndef g():\n        x = 1\n"}
    message = edit_error(apply_edits, files, [Edit("loss.py", "  x = 1", "  x = 3")], EDITABLE)
    assert "matches 2 places" in message


def test_whitespace_tolerant_match_reindents():
    # The model copied the body flush left, with a blank line that is not in the file.
    rho = "rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)"
    edit = Edit("loss.py", f"{rho}\n\nreturn -jax.nn.log_sigmoid(beta * rho)",
                f"{rho}\nif True:\n    rho = rho - 1.0\nreturn -jax.nn.log_sigmoid(beta * rho)")
    out = apply_edits(FILES, [edit], EDITABLE)["loss.py"]
    compile(out, "loss.py", "exec")
    body = f"    {rho}\n    if True:\n        rho = rho - 1.0\n    return -jax.nn.log_sigmoid(beta * rho)\n"
    assert body + "\n\ndef helper(x):" in out and out.count("def helper(x):") == 1


def test_whitespace_tolerant_match_dedents():
    # Over-indented SEARCH and REPLACE, with trailing spaces and extra inner spacing.
    edit = Edit("loss.py", "        if x > 0:   \n            return x\n        return  -x",
                "        if x < 0:\n            return -x\n        return x")
    out = apply_edits(FILES, [edit], EDITABLE)["loss.py"]
    compile(out, "loss.py", "exec")
    assert out.endswith("def helper(x):\n    if x < 0:\n        return -x\n    return x\n")
    namespace = execute(out.replace("import jax", ""))
    assert namespace["helper"](-3) == 3 and namespace["helper"](4) == 4


def test_failed_match_shows_nearest_lines_on_one_line():
    edit = Edit("loss.py", "def helper(y):\n    if y >= 0:\n        return y", "pass")
    message = edit_error(apply_edits, FILES, [edit], EDITABLE)
    assert message.startswith("the SEARCH block was not found in loss.py")
    assert "def helper(x): ⏎     if x > 0: ⏎         return x" in message
    assert "rho" not in message


def test_failed_match_shows_at_most_8_lines():
    source = "".join(f"line_{i} = {i}\n" for i in range(30))
    search = "\n".join(f"line_{i} = {i + 100}" for i in range(5, 17))
    message = edit_error(apply_edits, {"loss.py": source}, [Edit("loss.py", search, "x = 1")], EDITABLE)
    assert "line_5 = 5" in message and "line_12 = 12" in message and "line_13" not in message
    assert message.endswith("…")


# --- static_check ----------------------------------------------------------------------------------------------------


def test_static_check_passes_valid_edit_with_renamed_parameters():
    edited = {**FILES, "loss.py": LOSS.replace("def loss(policy_chosen_logps,", "def loss(pc,").replace(
        "(policy_chosen_logps -", "(pc -")}
    static_check(FILES, edited)
    static_check(FILES, {**FILES, "notes.txt": "not python ("})


def test_static_check_syntax_error():
    edited = {**FILES, "loss.py": LOSS.replace("return -jax.nn.log_sigmoid(beta * rho)", "return -jax.nn.log_sigmoid(")}
    message = edit_error(static_check, FILES, edited)
    assert message.startswith("loss.py line ")


def test_static_check_syntax_error_names_line():
    edited = {**FILES, "loss.py": "import jax\n\n\ndef loss(a, b, c, d, beta)\n    return a\n"}
    message = edit_error(static_check, FILES, edited)
    assert message.startswith("loss.py line 4:") and "def loss(a, b, c, d, beta)" in message


def test_static_check_removed_function():
    edited = {**FILES, "loss.py": LOSS[:LOSS.index("def helper")]}
    assert "function 'helper' was removed" in edit_error(static_check, FILES, edited)


def test_static_check_changed_arity():
    edited = {**FILES, "loss.py": LOSS.replace("reference_rejected_logps, beta):", "reference_rejected_logps):")}
    message = edit_error(static_check, FILES, edited)
    assert message.startswith("loss(...) must keep its 5 positional parameters")


def test_static_check_ignores_unchanged_files_and_rebound_names():
    broken = {"loss.py": "def loss(a):\n    return a\n", "old.py": "this is not python ("}
    edited = {**broken, "loss.py": "import functools\n\n\ndef _loss(a, b):\n    return a\n\n\n"
                                   "loss = functools.partial(_loss, b=1)\n"}
    static_check(broken, edited)

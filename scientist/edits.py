"""Applying a model's SEARCH/REPLACE edits to template files, and checking the result before it runs.

Matching is exact first, then tolerant of whitespace (indentation, blank lines), because models
often copy code with the wrong indentation. Every refusal is an EditError whose one-line message
is meant to be sent back to the model verbatim.
"""

from __future__ import annotations

import ast
import difflib

from base.formats import NEWLINE_MARK, Edit, one_line

MAX_SHOWN_LINES = 8  # nearest lines quoted when a SEARCH block is not found
SCORED_LINES = 12  # SEARCH lines used to find those nearest lines


class EditError(ValueError):
    """An edit that cannot be applied or yields broken code; the message is one line, meant for the model."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def _resolve_path(path: str, editable: list[str]) -> str:
    """The editable file an edit names; "./loss.py" or "templates/x/loss.py" mean loss.py."""
    if path in editable:
        return path
    stripped = path.removeprefix("./")
    matches = [e for e in editable if stripped == e or stripped.endswith("/" + e)]
    if len(matches) == 1:
        return matches[0]
    if len(editable) == 1:
        raise EditError(f"{editable[0]} is the only file you may edit; {path} is fixed")
    raise EditError(f"you may edit only {', '.join(editable)}; {path} is fixed")


def _key(line: str) -> str:
    """A line as compared by the tolerant match: surrounding whitespace dropped, inner runs collapsed."""
    return " ".join(line.split())


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _reindent(lines: list[str], have: str, want: str) -> list[str]:
    """Shift lines written at indentation `have` so that it becomes `want`, keeping relative indentation."""
    if want.startswith(have):
        extra = want[len(have):]
        return [extra + line if line.strip() else line for line in lines]
    if have.startswith(want):
        cut = len(have) - len(want)
        return [line[min(cut, len(_indent(line))):] for line in lines]
    return lines  # tabs against spaces: no safe shift, leave the model's indentation


def _tolerant_replace(content: str, edit: Edit) -> str | None:
    """Apply the edit matching lines whitespace-tolerantly; None when nothing matches."""
    file_lines = content.split("\n")
    search = [line for line in edit.search.split("\n") if line.strip()]
    wanted = [_key(line) for line in search]
    numbered = [(i, _key(line)) for i, line in enumerate(file_lines) if line.strip()]
    keys = [k for _, k in numbered]
    starts = [s for s in range(len(keys) - len(wanted) + 1) if keys[s:s + len(wanted)] == wanted]
    if not starts:
        return None
    if len(starts) > 1:
        raise EditError(f"the SEARCH block matches {len(starts)} places in {edit.path}; add a few more "
                        f"surrounding lines to it so that it matches exactly one place")
    first = numbered[starts[0]][0]
    last = numbered[starts[0] + len(wanted) - 1][0]
    replace = _reindent(edit.replace.split("\n"), _indent(search[0]), _indent(file_lines[first]))
    if not edit.replace:
        replace = []  # an empty REPLACE deletes the lines rather than leaving a blank one
    return "\n".join(file_lines[:first] + replace + file_lines[last + 1:])


def _nearest_lines(content: str, search: str) -> str:
    """The window of the file most similar to the SEARCH text, as at most MAX_SHOWN_LINES lines.

    Windows are scored line against line (whitespace ignored, blank lines skipped) on the first
    SCORED_LINES lines of the SEARCH text, which keeps the cost linear in the file's length.
    """
    file_lines = content.split("\n")
    numbered = [(i, _key(line)) for i, line in enumerate(file_lines) if line.strip()]
    wanted = [_key(line) for line in search.split("\n") if line.strip()]
    size = max(1, min(len(wanted), len(numbered)))
    scores = [0.0] * (len(numbered) - size + 1)
    matcher = difflib.SequenceMatcher(autojunk=False)
    for j, line in enumerate(wanted[:min(size, SCORED_LINES)]):
        matcher.set_seq2(line)  # seq2 is the one difflib preprocesses, so it is set once per SEARCH line
        for start in range(len(scores)):
            matcher.set_seq1(numbered[start + j][1])
            scores[start] += matcher.ratio()
    start = max(range(len(scores)), key=scores.__getitem__)
    first, last = numbered[start][0], numbered[start + size - 1][0]
    shown = [line.rstrip() for line in file_lines[first:last + 1]]
    more = " …" if len(shown) > MAX_SHOWN_LINES else ""
    return NEWLINE_MARK.join(shown[:MAX_SHOWN_LINES]) + more


def _apply_one(content: str, edit: Edit) -> str:
    """The content with one edit applied."""
    count = content.count(edit.search)
    if count == 1:
        return content.replace(edit.search, edit.replace, 1)
    if count > 1:
        raise EditError(f"the SEARCH block matches {count} places in {edit.path}; add a few more "
                        f"surrounding lines to it so that it matches exactly one place")
    result = _tolerant_replace(content, edit)
    if result is not None:
        return result
    if not content.strip():
        raise EditError(f"{edit.path} is empty; use an empty SEARCH block to write its whole content")
    raise EditError(f"the SEARCH block was not found in {edit.path}; copy the lines to replace exactly. "
                    f"The most similar lines in {edit.path} are:{NEWLINE_MARK}{_nearest_lines(content, edit.search)}")


def apply_edits(files: dict[str, str], edits: list[Edit], editable: list[str]) -> dict[str, str]:
    """New file contents after applying the edits in order; `files` is left untouched.

    An empty SEARCH replaces the whole file (or creates it) with REPLACE. Edits may only touch
    `editable` files; any refusal raises EditError.
    """
    result = dict(files)
    for edit in edits:
        path = _resolve_path(edit.path, editable)
        edit = Edit(path, edit.search, edit.replace)
        if not edit.search.strip():
            result[path] = edit.replace if edit.replace.endswith("\n") else edit.replace + "\n"
        elif path not in result:
            raise EditError(f"{path} does not exist yet; use an empty SEARCH block to write its whole content")
        else:
            result[path] = _apply_one(result[path], edit)
    return result


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The top-level functions of a module, by name (the last definition wins, as at run time)."""
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def _assigned(tree: ast.Module) -> set[str]:
    """Top-level names bound other than by def, e.g. `loss = make_loss(0.1)` or an import."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
    return names


def _positional(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return len(fn.args.posonlyargs) + len(fn.args.args)


def _parse(path: str, source: str) -> ast.Module:
    """The module's syntax tree, or an EditError naming the line that does not parse."""
    try:
        return ast.parse(source, filename=path)
    except SyntaxError as err:
        text = f": `{err.text.strip()[:80]}`" if err.text and err.text.strip() else ""
        raise EditError(f"{path} line {err.lineno}: {err.msg}{text}") from None


def static_check(original: dict[str, str], edited: dict[str, str]) -> None:
    """Raise EditError if a changed Python file does not parse or breaks the original's top-level functions.

    Each top-level function of the original must still exist with the same number of positional
    parameters (names and bodies may change). Non-.py files and unchanged files are not checked.
    """
    for path, source in edited.items():
        if not path.endswith(".py") or original.get(path) == source:
            continue
        tree = _parse(path, source)
        if path not in original:
            continue
        try:
            before = _functions(ast.parse(original[path], filename=path))
        except SyntaxError:
            continue  # nothing to compare against; the new file parses, which is all we can ask
        after, other = _functions(tree), _assigned(tree)
        for name, fn in before.items():
            if name not in after:
                if name in other:
                    continue  # bound another way (e.g. a factory's result); its signature can't be read here
                raise EditError(f"function '{name}' was removed from {path}; keep it (you may change its body)")
            n, m = _positional(fn), _positional(after[name])
            if n != m:
                noun = "parameter" if n == 1 else "parameters"
                raise EditError(f"{name}(...) must keep its {n} positional {noun} ({path} now gives it {m})")

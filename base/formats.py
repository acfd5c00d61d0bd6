"""Parsing the answer formats models are asked for: JSON ideas, LaTeX blocks and SEARCH/REPLACE edits.

Local models often get a format slightly wrong, so parsing tolerates harmless variations (a missing
fence language, "7" for 7, a path in backticks). Anything it cannot safely read raises FormatError,
whose one-line message is written to be sent back to the model verbatim so it can fix its answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pydantic

from base import records
from base.llm import Schema

NEWLINE_MARK = " ⏎ "  # stands for a line break inside a one-line message


def one_line(message: str) -> str:
    """The message with line breaks replaced by a visible mark, so it stays one line."""
    return NEWLINE_MARK.join(part for part in message.strip().splitlines())


class FormatError(ValueError):
    """An answer that does not follow the requested format; the message is one line, meant for the model."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


# --- fenced blocks ------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```\s*([\w+.-]*)\s*$")


@dataclass(frozen=True)
class _Block:
    lang: str  # lowercased; "" when the fence names no language
    body: str
    closed: bool


def _fenced_blocks(text: str) -> list[_Block]:
    """Markdown fenced blocks in order; a fence left open runs to the end of the text."""
    blocks: list[_Block] = []
    lang: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        fence = _FENCE.match(line)
        if lang is None:
            if fence:
                lang, body = fence.group(1).lower(), []
        elif fence and not fence.group(1):
            blocks.append(_Block(lang, "\n".join(body), True))
            lang = None
        else:
            body.append(line)
    if lang is not None:
        blocks.append(_Block(lang, "\n".join(body), False))
    return blocks


# --- JSON ----------------------------------------------------------------------------------------------------------

_JSON_HINT = "reply with one JSON object in a ```json fenced block (double quotes, no trailing commas, no comments)"


def _json_error(err: json.JSONDecodeError, where: str) -> FormatError:
    """A FormatError saying where strict JSON parsing failed, quoting the offending line."""
    lines = err.doc.splitlines()
    line = lines[err.lineno - 1].strip() if 0 < err.lineno <= len(lines) else ""
    near = f" near `{line[:80]}`" if line else ""
    return FormatError(f"invalid JSON in {where} at line {err.lineno} column {err.colno}: {err.msg}{near}; "
                       f"{_JSON_HINT}")


def _load_object(source: str, where: str) -> dict:
    """json.loads that insists on an object, raising FormatError otherwise.

    Raw control characters (a newline) inside strings are taken: small models write them, and what they meant is
    plain; anything else is strict JSON.
    """
    try:
        value = json.loads(source, strict=False)
    except json.JSONDecodeError as err:
        raise _json_error(err, where) from None
    if not isinstance(value, dict):
        raise FormatError(f"{where} holds a JSON {type(value).__name__}, not an object; {_JSON_HINT}")
    return value


def _balanced_end(text: str, start: int) -> int:
    """Index just past the brace that closes the one at `start` (braces in JSON strings ignored), or len(text)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _bare_objects(text: str) -> list[str]:
    """The outermost {...} spans of the text, in order."""
    spans, i = [], text.find("{")
    while i != -1:
        end = _balanced_end(text, i)
        spans.append(text[i:end])
        i = text.find("{", end)
    return spans


def parse_json_block(text: str) -> dict:
    """The JSON object in a model's answer.

    Looks, in order, at the first ```json fenced block, then fenced blocks without a language that
    parse as an object, then bare {...} objects in the text. JSON is parsed strictly; a failure
    says where it happened.
    """
    blocks = _fenced_blocks(text)
    for block in blocks:
        if block.lang.startswith("json"):
            return _load_object(block.body, "the ```json block")
    for block in blocks:
        if not block.lang:
            try:
                value = json.loads(block.body, strict=False)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    candidates = _bare_objects(text)
    if not candidates:
        raise FormatError(f"no JSON object found; {_JSON_HINT}")
    for candidate in candidates:
        try:
            value = json.loads(candidate, strict=False)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    # Nothing parsed: the longest candidate is most likely the intended object, so report its error.
    return _load_object(max(candidates, key=len), "the JSON object")


# --- ideas ---------------------------------------------------------------------------------------------------------

# "7", "7.0", "7/10", "3 (good)", "3: good"
_SCORE_TEXT = re.compile(r"^\s*(\d+)(?:\.0*)?\s*(?:/\s*(\d+))?\s*(?:[(:\-–]\s*[A-Za-z][A-Za-z .-]*\)?)?\s*$")


def parse_score(value: object, low: int, high: int) -> int:
    """The integer a model meant for a score on [low, high], or ValueError naming the range.

    Accepts 7, 7.0, "7", "7/10" (only with the scale's own top: "3/10" on a 1-4 scale is
    another scale, not a 3) and "3 (good)"; never a bool.
    """
    score: int | None = None
    if isinstance(value, bool):
        score = None  # True is an int to Python, but never a score
    elif isinstance(value, int):
        score = value
    elif isinstance(value, float) and value.is_integer():
        score = int(value)
    elif isinstance(value, str) and (m := _SCORE_TEXT.match(value)):
        if m.group(2) is None or int(m.group(2)) == high:
            score = int(m.group(1))
    if score is None or not low <= score <= high:
        raise ValueError(f"must be an integer from {low} to {high}, got {value!r}")
    return score


class Idea(records.Idea):
    """An idea as a model must answer it: The AI Scientist's fields, every one given, scores from 1 to 10."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    hypothesis: str
    experiment: str
    interestingness: int
    feasibility: int
    novelty: int

    @pydantic.field_validator("name", mode="before")
    @classmethod
    def _normalise_name(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # let pydantic report the type
        name = re.sub(r"[^a-z0-9_]", "_", value.strip().lower())
        name = re.sub(r"_+", "_", name).strip("_")[:40].rstrip("_")
        if not name:
            raise ValueError("must be a short snake_case identifier such as `margin_dpo`")
        return name

    @pydantic.field_validator("title", "hypothesis", "experiment", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = "\n".join(value)  # some models give the experiment as a list of steps
        if isinstance(value, str):
            value = value.strip()
            if not value:
                raise ValueError("must not be empty")
        return value

    @pydantic.field_validator("interestingness", "feasibility", "novelty", mode="before")
    @classmethod
    def _score(cls, value: object) -> int:
        return parse_score(value, 1, 10)


_IDEA_FIELDS = ("name", "title", "hypothesis", "experiment", "interestingness", "feasibility", "novelty")
_KEY_ALIASES = {"short_hypothesis": "hypothesis"}


def _validation_message(err: pydantic.ValidationError) -> str:
    """One readable sentence per problem in an idea, joined on one line."""
    missing = [str(e["loc"][0]) for e in err.errors() if e["type"] == "missing"]
    parts = [f"the idea is missing {', '.join(repr(m) for m in missing)}"] if missing else []
    for e in err.errors():
        if e["type"] != "missing":
            msg = e["msg"].removeprefix("Value error, ")
            parts.append(f"idea field '{e['loc'][0]}' {msg[:1].lower()}{msg[1:]}")
    fields = ", ".join(_IDEA_FIELDS)
    return "; ".join(parts) + f"; give one JSON object with the fields {fields}"


def parse_idea(text: str) -> Idea:
    """The idea in a model's answer: a JSON object that is the idea itself or {"idea": {...}}."""
    data = parse_json_block(text)
    if isinstance(data.get("idea"), dict):
        data = data["idea"]
    # Keys like "Name" or "Short Hypothesis" (The AI Scientist's own spelling) mean the same fields.
    keys = {re.sub(r"[\s-]+", "_", str(k).strip().lower()): v for k, v in data.items()}
    keys = {_KEY_ALIASES.get(k, k): v for k, v in keys.items()}
    try:
        return Idea.model_validate(keys)
    except pydantic.ValidationError as err:
        raise FormatError(_validation_message(err)) from None


# --- schemas: the answers' shapes, sent as response_format where the server takes one (base.llm) ---------------

THOUGHT = {"type": "string", "description": "your thoughts, before the other fields (where a round may end, "
                                            "\"I am done\" goes here)"}


def answer_schema(name: str, model: type[pydantic.BaseModel], *, fields: tuple[str, ...] | None = None,
                  ranges: dict[str, tuple[int, int]] | None = None, enums: dict[str, list] | None = None,
                  patterns: dict[str, str] | None = None, thought: bool = True) -> Schema:
    """The JSON schema of an answer from a pydantic model: its fields (by alias; `fields` picks and orders them)
    with integer ranges, enums and string patterns added, a "thought" first, every key required and no other
    (strict mode).

    An integer range is written as the enum of its values: grammar-constrained servers (llama.cpp's converter)
    enforce enums and patterns but not minimum/maximum, and OpenAI's strict mode takes all three.
    """
    props_in = model.model_json_schema(by_alias=True)["properties"]
    props: dict[str, dict] = {"thought": THOUGHT} if thought else {}
    for key in fields or tuple(props_in):
        prop = {k: v for k, v in props_in[key].items() if k not in ("title", "default")}
        if "anyOf" in prop:  # Optional[...] in the record: the answer must give the value
            prop = next(p for p in prop.pop("anyOf") if p.get("type") != "null") | prop
        low_high = (ranges or {}).get(key)
        if low_high is not None:
            prop.update(type="integer", enum=list(range(low_high[0], low_high[1] + 1)))
        if key in (enums or {}):
            prop["enum"] = enums[key]
        if key in (patterns or {}):
            prop["pattern"] = patterns[key]
        props[key] = prop
    return Schema(name, {"type": "object", "properties": props, "required": list(props),
                         "additionalProperties": False})


IDEA_SCHEMA = answer_schema("idea", Idea, fields=_IDEA_FIELDS,
                            ranges={k: (1, 10) for k in ("interestingness", "feasibility", "novelty")},
                            patterns={"name": "^[a-z][a-z0-9_]{1,39}$"})


class Verdict(pydantic.BaseModel):
    """A novelty decision as the model answers it."""

    novel: bool
    reason: str


VERDICT_SCHEMA = answer_schema("novelty", Verdict)


def is_done(text: str) -> bool:
    """Whether the model says "I am done" (any case or spacing), ending reflection early."""
    return re.search(r"\bI\s+am\s+done\b", text, re.IGNORECASE) is not None


# --- LaTeX ---------------------------------------------------------------------------------------------------------


def parse_latex_block(text: str) -> str:
    """The content of the first ```latex (or ```tex) fenced block."""
    for block in _fenced_blocks(text):
        if block.lang in ("latex", "tex"):
            # An unclosed block may be a truncated answer, so it is refused rather than guessed at.
            if not block.closed:
                raise FormatError("the ```latex block is not closed; end it with a line holding only ```")
            if not block.body.strip():
                raise FormatError("the ```latex block is empty; put the LaTeX inside it")
            return block.body.strip("\n")
    raise FormatError("no ```latex fenced block found; put the LaTeX in a block that starts with ```latex "
                      "and ends with ```")


# --- SEARCH/REPLACE edits ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edit:
    """Replace `search` by `replace` in the file at `path`; an empty search rewrites the whole file."""

    path: str
    search: str
    replace: str


_SEARCH = re.compile(r"^\s*<{5,9}\s*SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9}\s*REPLACE\s*$")
_PATH = re.compile(r"^[\w./-]*[\w-]+[./][\w./-]*\w$")  # a word with an extension or a folder, so prose is no path
_EDIT_HINT = ("write the file path alone on a line, then <<<<<<< SEARCH, the exact lines to find, =======, "
              "the new lines, >>>>>>> REPLACE")


def _clean_path(line: str) -> str:
    """The path in a path line such as `loss.py`, **loss.py**, File: loss.py or # loss.py:."""
    path = line.strip().lstrip("#").strip()
    path = re.sub(r"^(file|path|filename)\s*:\s*", "", path, flags=re.IGNORECASE)
    return path.strip("`*'\" ").rstrip(":").strip("`*'\" ")


def _path_before(lines: list[str], index: int, previous: str | None) -> str:
    """The path for the SEARCH marker at lines[index], from the nearest non-blank, non-fence line above it.

    A block right after another block's REPLACE marker edits the same file, as Aider allows.
    """
    for line in reversed(lines[:index]):
        if not line.strip() or _FENCE.match(line):
            continue
        if _REPLACE.match(line) and previous is not None:
            return previous
        path = _clean_path(line)
        if _PATH.match(path):
            return path
        raise FormatError(f"the line before <<<<<<< SEARCH must be the file path alone (e.g. loss.py), "
                          f"got `{line.strip()[:80]}`; {_EDIT_HINT}")
    raise FormatError(f"a SEARCH/REPLACE block has no file path line before it; {_EDIT_HINT}")


def parse_edits(text: str) -> list[Edit]:
    """The SEARCH/REPLACE blocks in a model's answer, in order."""
    lines = text.splitlines()
    edits: list[Edit] = []
    path: str | None = None
    i = 0
    while i < len(lines):
        if _REPLACE.match(lines[i]):
            raise FormatError(f">>>>>>> REPLACE found without <<<<<<< SEARCH before it; {_EDIT_HINT}")
        if not _SEARCH.match(lines[i]):
            i += 1
            continue
        path = _path_before(lines, i, path)
        divider = next((j for j in range(i + 1, len(lines)) if _DIVIDER.match(lines[j]) or _SEARCH.match(lines[j])),
                       None)
        if divider is None or _SEARCH.match(lines[divider]):
            raise FormatError(f"the SEARCH block for {path} is missing its ======= line; {_EDIT_HINT}")
        end = next((j for j in range(divider + 1, len(lines)) if _REPLACE.match(lines[j]) or _SEARCH.match(lines[j])),
                   None)
        if end is None or not _REPLACE.match(lines[end]):
            raise FormatError(f"the SEARCH block for {path} is missing its >>>>>>> REPLACE line; {_EDIT_HINT}")
        edits.append(Edit(path, "\n".join(lines[i + 1:divider]), "\n".join(lines[divider + 1:end])))
        i = end + 1
    if not edits:
        raise FormatError(f"no SEARCH/REPLACE blocks found; {_EDIT_HINT}")
    return edits


def edits_schema(paths: tuple[str, ...] | list[str] = (), *, must_edit: bool = False) -> Schema:
    """The JSON form of edits, for servers that take a schema: the same Edit entries as the SEARCH/REPLACE text.
    With the template's editable `paths`, "path" is their enum, so a constrained server cannot name another file;
    `must_edit` (the first run of an idea, which nothing can have completed yet) asks for at least one edit."""
    path: dict = {"type": "string", "description": "the editable file, e.g. loss.py"}
    if paths:
        path["enum"] = list(paths)
    return Schema("edits", {
        "type": "object",
        "properties": {
            "thought": {"type": "string", "description": "what you change and why"},
            "done": {"type": "boolean", "description": "true, with no edits, when the experiments are complete"},
            "edits": {"type": "array", **({"minItems": 1} if must_edit else {}), "items": {
                "type": "object",
                "properties": {
                    "path": path,
                    "search": {"type": "string", "description": "the exact lines to find (empty: rewrite the file)"},
                    "replace": {"type": "string", "description": "the lines that replace them"},
                },
                "required": ["path", "search", "replace"], "additionalProperties": False}},
        },
        "required": ["thought", "done", "edits"], "additionalProperties": False})


EDITS_SCHEMA = edits_schema()


def edits_json(text: str) -> dict | None:
    """The answer as a JSON edits object (EDITS_SCHEMA's shape), or None when it is not one (SEARCH/REPLACE text)."""
    try:
        data = json.loads(text.strip(), strict=False)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and ("edits" in data or "done" in data) else None


def parse_edit_answer(text: str) -> list[Edit]:
    """The edits of an answer: JSON in EDITS_SCHEMA's shape (from a server that took the schema) or SEARCH/REPLACE
    blocks; FormatError otherwise, also for a JSON answer that says done (the caller checks `edits_done`)."""
    data = edits_json(text)
    if data is None:
        body = text.strip()
        if body.startswith("{") and "<<<<<<<" not in body:
            # all one {...} that is not valid JSON (a constrained server cut at the token limit): say where it
            # broke, not "no SEARCH/REPLACE blocks"
            _load_object(body, "the JSON edits")
        return parse_edits(text)
    entries = data.get("edits")
    if not isinstance(entries, list) or not entries:
        raise FormatError("the JSON answer has no edits: give \"edits\" as a list of {\"path\", \"search\", "
                          "\"replace\"} objects, or \"done\": true when the experiments are complete")
    edits = []
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("path", "search", "replace"))):
            raise FormatError(f"edit {i + 1} of the JSON answer must be an object with the strings \"path\", "
                              "\"search\" and \"replace\"")
        edits.append(Edit(_clean_path(entry["path"]), entry["search"].strip("\n"), entry["replace"].strip("\n")))
    return edits


def edits_done(text: str) -> bool:
    """Whether an edit answer ends the experiments: "done": true without edits in JSON, or "I am done" in text."""
    data = edits_json(text)
    if data is not None:
        return data.get("done") is True and not data.get("edits")
    return is_done(text)


def edits_thought(text: str) -> str | None:
    """The "thought" of a JSON edit answer, or None for a SEARCH/REPLACE answer."""
    data = edits_json(text)
    return str(data.get("thought") or "") if data is not None else None

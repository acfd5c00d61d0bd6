"""Every model call goes through here: litellm, with retries, a budget, and a recorder so no call is paid for twice.

A call is identified by its request key (model, api base, messages, temperature and a caller's key). A call
already recorded under that key is replayed from the recorder: a killed run resumes without asking again.

Structured outputs: a call whose answer is JSON passes its `Schema`, which goes to the server as
`response_format` in the form the server accepts: OpenAI's {"type": "json_schema", ...} (OpenAI, vLLM, Ollama,
and Anthropic through litellm's tool translation), the {"type": "json_object", "schema": ...} form of
llama-cpp-python's server, or none (the answer is then parsed from the prompt's fenced block as before). Which
form a (model, api base) accepts is found on its first JSON call and remembered (`FormMemory`: the store's
response_formats table in a run), so it is probed once. The answer is validated by the caller either way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol, TypeVar

from base import retry

NO_KEY = "sk-no-key"  # local OpenAI-compatible servers (vLLM, Ollama) want some key, not a real one


T = TypeVar("T")


class LLMError(Exception):
    """A model call that cannot be made or did not succeed; the message is one line, for the user."""


class ContextTooLong(LLMError):
    """The conversation no longer fits the model's context window: that conversation is over, not the session
    (a small local model's grows past 8k tokens in one idea's re-asks)."""


class BudgetExceeded(Exception):
    """The run's dollar or time budget is spent; the message says which and how much."""


@dataclass
class Budget:
    """Limits on a run's spending: dollars on model calls, wall-clock minutes and sandboxed evaluations
    (None = unlimited)."""

    usd: float | None = None
    minutes: float | None = None
    started: float = field(default_factory=time.time)
    spent_usd: float = 0.0
    evaluations: int | None = None
    evaluated: float = 0.0   # full evaluations count 1, a cascade's screens their cost (base.cascade.screen_cost)
    # Shared by the threads of a session (several ideas at once): no spending is lost between them.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def elapsed_minutes(self) -> float:
        """Minutes since the budget started."""
        return (time.time() - self.started) / 60.0

    def check(self, wait_s: float = 0.0) -> None:
        """Raise BudgetExceeded when dollars or minutes are used up, or the minutes would be after waiting wait_s.

        A budget of 0 is used up at once; wait_s is the seconds a retry is about to wait.
        """
        if self.usd is not None and self.spent_usd >= self.usd:
            raise BudgetExceeded(f"dollar budget of ${self.usd:.2f} reached: ${self.spent_usd:.4f} spent")
        if self.minutes is None:
            return
        elapsed = self.elapsed_minutes()
        spent = f"{elapsed:.1f} min elapsed, ${self.spent_usd:.4f} spent"
        if elapsed >= self.minutes:
            raise BudgetExceeded(f"time budget of {self.minutes:g} min reached: {spent}")
        if elapsed + wait_s / 60.0 >= self.minutes:
            raise BudgetExceeded(f"time budget of {self.minutes:g} min would run out in a {wait_s:.0f} s wait "
                                 f"to retry: {spent}")

    def add(self, usd: float) -> None:
        """Count the cost of a call."""
        with self._lock:
            self.spent_usd += usd

    def reserve_evaluation(self, cost: float = 1.0) -> None:
        """Take an evaluation (a screen: its cost, a fraction of one) from the budget before it starts, or raise
        BudgetExceeded when none is left.

        Reserved, not counted after: with several ideas in flight, checking first and counting later
        would let each of them start the last one. What is left may be less than the cost: the last
        evaluation started within the budget runs whole.
        """
        with self._lock:
            if self.evaluations is not None and self.evaluated >= self.evaluations - 1e-9:
                raise BudgetExceeded(f"evaluation budget of {self.evaluations} reached"
                                     + (f" ({self.evaluated:.2f} used, screens at their cost)"
                                        if self.evaluated != int(self.evaluated) else ""))
            self.evaluated += cost

    def refund_evaluation(self, cost: float = 1.0) -> None:
        """Give back a reservation that computed nothing (the run was reused from the store)."""
        with self._lock:
            self.evaluated -= cost


STRUCTURED_MODES = ("auto", "on", "off")
# The response_format forms, best first; "none" means the server takes no response_format.
FORMS = ("json_schema", "json_object", "none")
# What a server that does not take a response_format answers: 400/422 (OpenAI-style servers, llama-cpp-python's
# request validation), 500 (llama-cpp-python on json_schema), 501. While probing, these move on to the next form.
REJECTS = (400, 415, 422, 500, 501)


@dataclass(frozen=True)
class Schema:
    """The JSON schema of an answer, sent as response_format where the server accepts one."""

    name: str
    schema: dict


class FormMemory(Protocol):
    """Which response_format form a model at an api base accepts: the store's table in a run, a dict in tests."""

    def get(self, model: str, api_base: str) -> str | None: ...

    def put(self, model: str, api_base: str, form: str, detail: str = "") -> None: ...


class MemoryForms:
    """FormMemory in a dict, for one process (tests, and callers without a store)."""

    def __init__(self) -> None:
        self.forms: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def get(self, model: str, api_base: str) -> str | None:
        with self._lock:
            return self.forms.get((model, api_base))

    def put(self, model: str, api_base: str, form: str, detail: str = "") -> None:
        with self._lock:
            self.forms[(model, api_base)] = form


def response_format(form: str, schema: Schema) -> dict | None:
    """The response_format of a form for a schema (None for "none")."""
    if form == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": schema.name, "schema": schema.schema, "strict": True}}
    if form == "json_object":
        return {"type": "json_object", "schema": schema.schema}
    return None


class Recorder(Protocol):
    """Where calls are kept by request key: the SQLite store in a run, a dict in tests."""

    def lookup(self, key: str) -> dict | None: ...

    def record(self, key: str, call: dict) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    """Which model a stage talks to, and how: the one place model clients are made from the settings."""

    model: str
    api_base: str | None = None
    retries: int = 5
    structured: str = "auto"
    max_tokens: int | None = None

    def client(self, *, recorder: Recorder | None = None, budget: Budget | None = None,
               forms: FormMemory | None = None) -> LLM:
        """A client for this model: calls kept by `recorder`, paid from `budget`, response formats in `forms`."""
        return LLM(self.model, recorder=recorder, budget=budget or Budget(), api_base=self.api_base,
                   max_retries=self.retries, structured=self.structured, forms=forms, max_tokens=self.max_tokens)

    def check(self) -> None:
        """LLMError before any work when the model cannot be called (unknown provider, missing API key)."""
        self.client().check()


class LLM:
    """One model, called through litellm with retries, budget checks and recording."""

    def __init__(self, model: str, *, recorder: Recorder, budget: Budget, api_base: str | None = None,
                 max_retries: int = 5, timeout_s: float = 120.0, backoff_s: float = 1.0, structured: str = "auto",
                 forms: FormMemory | None = None, max_tokens: int | None = None):
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"--structured must be one of {', '.join(STRUCTURED_MODES)}, got {structured!r}")
        self.structured = structured
        self.max_tokens = max_tokens  # None: the server's default (a local server's may be its whole context)
        self.forms = forms if forms is not None else MemoryForms()
        self.model = model
        self.recorder = recorder
        self.budget = budget
        self.api_base = api_base
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s

    @property
    def where(self) -> str:
        """The model and, if any, its api base: how messages name what was called."""
        return f"model {self.model}" + (f" at {self.api_base}" if self.api_base else "")

    def check(self) -> None:
        """Fail early, before any work, when the model cannot be called: unknown provider or missing API key."""
        litellm = _litellm()
        try:
            litellm.get_llm_provider(model=self.model)
        except Exception:
            raise LLMError(
                f"model {self.model}: litellm cannot tell its provider; name it as provider/model, "
                "e.g. openai/gpt-4o or anthropic/claude-sonnet-4-5"
            ) from None
        if self.api_base:
            return  # a local or proxy server: keys are optional (see _api_key)
        missing = litellm.validate_environment(model=self.model)["missing_keys"]
        if missing:
            raise LLMError(f"model {self.model} needs {' and '.join(missing)} in the environment")

    def request_key(self, messages: list[dict], temperature: float, key: str = "") -> str:
        """What makes two calls the same question: model, messages, temperature and the caller's key.

        Not the api base: the same model served from another address (a restarted local server) answers the
        same question, and a resumed run must not pay for it again.
        """
        payload = json.dumps([self.model, messages, temperature, key], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()

    def chat(self, stage: str, messages: list[dict], *, temperature: float = 0.7, key: str = "",
             schema: Schema | None = None) -> str:
        """Ask the model; return its answer text. A recorded identical call is replayed for free.

        With a schema (and structured outputs not off), the schema goes as response_format in the form the server
        accepts (see the module's docstring). It is not part of the request key: the same question asked with or
        without a schema is the same question, and a resumed run replays its answer.
        """
        rkey = self.request_key(messages, temperature, key)
        recorded = self.recorder.lookup(rkey)
        if recorded is not None:
            return recorded["response"]
        if schema is not None and self.structured != "off":
            resp, latency, form = self._complete_structured(messages, temperature, schema)
        else:
            (resp, latency), form = self._complete(messages, temperature), None
        text, prompt_tokens, completion_tokens = self._parse(resp)
        cost = _cost(resp)
        self.budget.add(cost)
        self.recorder.record(rkey, {
            "stage": stage,
            "model": self.model,
            "messages": messages,
            "response": text,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "cost_usd": cost,
            "latency_s": latency,
            "created": time.time(),
            "response_format": form,
        })
        return text

    def form(self) -> str | None:
        """The response_format form remembered for this model and api base, or None before it is probed."""
        return self.forms.get(self.model, self.api_base or "")

    def _complete_structured(self, messages: list[dict], temperature: float,
                             schema: Schema) -> tuple[Any, float, str]:
        """A call with the schema as response_format: the remembered form, or the forms probed best first.

        While probing, an answer of REJECTS status moves on to the next form (llama-cpp-python's server answers
        500 to json_schema); rate limits, timeouts and other 5xx are retried as always. The form that answered is
        remembered. With structured "on", a server that takes neither structured form is an error; with "auto",
        the call goes without response_format and "none" is remembered.
        """
        where = (self.model, self.api_base or "")
        known = self.forms.get(*where)
        if known in ("json_schema", "json_object"):
            resp, latency = self._complete(messages, temperature, response_format(known, schema))
            return resp, latency, known
        if known == "none" and self.structured == "auto":
            resp, latency = self._complete(messages, temperature)
            return resp, latency, "none"
        refused = []
        for form in ("json_schema", "json_object"):
            try:
                resp, latency = self._complete(messages, temperature, response_format(form, schema), probing=True)
            except _Rejected as e:
                refused.append(f"{form}: {e}")
                continue
            self.forms.put(*where, form, "; ".join(refused))
            return resp, latency, form
        if self.structured == "on":
            raise LLMError(f"{self.where} takes no structured output ({'; '.join(refused)}); "
                           "use --structured auto or off")
        resp, latency = self._complete(messages, temperature)
        self.forms.put(*where, "none", "; ".join(refused))
        return resp, latency, "none"

    def _complete(self, messages: list[dict], temperature: float, rformat: dict | None = None,
                  probing: bool = False) -> tuple[Any, float]:
        """Call litellm under the retry policy (base/retry.py); return (response, latency).

        probing: an answer of REJECTS status is not retried but raised as _Rejected (the form is not taken).
        """
        litellm = _litellm()
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages, temperature=temperature,
                                      api_base=self.api_base, timeout=self.timeout_s, num_retries=0)
        if rformat is not None:
            kwargs["response_format"] = rformat
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        api_key = _api_key(litellm, self.model, self.api_base)
        if api_key:
            kwargs["api_key"] = api_key

        def attempt() -> tuple[Any, float]:
            start = time.monotonic()
            return litellm.completion(**kwargs), time.monotonic() - start

        def retryable(exc: BaseException) -> bool:
            return _retryable(exc) and not (probing and _rejects(exc))

        try:
            # The budget is checked before every try and every wait: waiting out an outage must not overrun it.
            return retry.call(attempt, retries=self.max_retries, retryable=retryable, retry_after=_retry_after,
                              backoff_s=self.backoff_s, limit=self.budget)
        except retry.RetriesExhausted as e:
            unreachable = _is_connection_error(e.last) and not _is_timeout(e.last)
            verb = "unreachable" if unreachable else "failed"
            raise LLMError(
                f"{self.where} {verb} after {self.max_retries} retries: {_reason(e.last, self.timeout_s)}"
            ) from None
        except BudgetExceeded:
            raise
        except Exception as exc:  # litellm raises many types; one that is not retryable fails at once
            if probing and _rejects(exc):
                raise _Rejected(_reason(exc, self.timeout_s)) from None
            if _context_too_long(exc):
                raise ContextTooLong(f"{self.where} failed: {_reason(exc, self.timeout_s)}") from None
            raise LLMError(f"{self.where} failed: {_reason(exc, self.timeout_s)}") from None

    def _parse(self, resp: Any) -> tuple[str, int, int]:
        """The answer text and token counts of a completion, or LLMError when it is malformed."""
        try:
            text = resp.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise LLMError(f"{self.where} returned a response without choices[0].message") from None
        usage = getattr(resp, "usage", None)
        return text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)


_LITELLM: ModuleType | None = None


class _Rejected(Exception):
    """A server refused a response_format form while it was probed; the message is the reason, one line."""


class InvalidAnswer(Exception):
    """The model gave no parsable answer within the allowed tries; `error` is the last parse error."""

    def __init__(self, error: str, tries: int):
        super().__init__(f"no valid answer in {tries} tries: {error}")
        self.error, self.tries = error, tries


def ask_parsed(llm: LLM, stage: str, messages: list[dict], parse: Callable[[str], T], *, tries: int,
               temperature: float, reask: Callable[[str], str], errors: tuple[type[Exception], ...],
               key: str | None = None, schema: Schema | None = None) -> tuple[T, str]:
    """Ask, parse, and on a bad answer send `reask(error)` back; the exchange stays in `messages`.

    Returns (parsed, text). With `key`, each try is a distinct request (`key:0`, `key:1`, ...), so
    an ensemble asking the same question keeps its answers apart. With `schema`, the answer's JSON schema goes
    to the server as response_format where it takes one; the answer is parsed and validated all the same (a
    schema-following answer may still hold a novelty of 123). Raises InvalidAnswer after `tries`.
    """
    error = ""
    for attempt in range(tries):
        text = llm.chat(stage, messages, temperature=temperature, key="" if key is None else f"{key}:{attempt}",
                        schema=schema)
        messages.append({"role": "assistant", "content": text})
        try:
            return parse(text), text
        except errors as e:
            error = str(e)
            messages.append({"role": "user", "content": reask(error)})
    raise InvalidAnswer(error, tries)


def _litellm() -> ModuleType:
    """Import litellm on first use (the import takes seconds) and quiet its console output."""
    global _LITELLM
    if _LITELLM is None:
        # litellm reads this once, while it is imported (get_model_cost_map in its __init__): without it the import
        # fetches the price map from the internet, and waits when offline. Set here, just before that import, so
        # importing base.llm leaves the environment alone; setdefault keeps a user's own choice.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.WARNING)
        _LITELLM = litellm
    return _LITELLM


def _api_key(litellm: ModuleType, model: str, api_base: str | None) -> str | None:
    """A placeholder key for a custom api base whose provider key is not set; otherwise litellm finds the key."""
    if not api_base:
        return None
    return NO_KEY if litellm.validate_environment(model=model)["missing_keys"] else None


def _cost(resp: Any) -> float:
    """The dollar cost of a completion, 0.0 for models litellm has no price for (local or test models)."""
    try:
        return float(_litellm().completion_cost(completion_response=resp) or 0.0)
    except Exception:
        return 0.0


def _chain(exc: BaseException) -> list[BaseException]:
    """An exception and its causes, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _is_timeout(exc: BaseException) -> bool:
    import openai  # a dependency of litellm, so already imported

    return any(isinstance(e, openai.APITimeoutError | TimeoutError) for e in _chain(exc))


def _is_connection_error(exc: BaseException) -> bool:
    # litellm 1.110 reports a refused connection as InternalServerError("Connection error.") whose cause
    # chain holds openai.APIConnectionError and ConnectionRefusedError, so look down the chain.
    import openai

    return any(isinstance(e, openai.APIConnectionError | ConnectionError | OSError) for e in _chain(exc))


def _retryable(exc: BaseException) -> bool:
    """Rate limits, timeouts, connection errors and server errors are worth retrying; 4xx requests are not."""
    return _is_timeout(exc) or _is_connection_error(exc) or retry.retryable_status(getattr(exc, "status_code", None))


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status the server answered, from the innermost httpx error of the chain (litellm reports
    Anthropic's 529 as a 500, but keeps the response it came with), else litellm's status_code."""
    import httpx  # a dependency of litellm, so already imported

    for e in reversed(_chain(exc)):
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


_CONTEXT = re.compile(r"context length|context window|context_length_exceeded|exceeds? the context|prompt is too long",
                      re.IGNORECASE)


def _context_too_long(exc: BaseException) -> bool:
    """Whether a 4xx says the messages do not fit the model's context (litellm's ContextWindowExceededError, or
    the words OpenAI-compatible servers and Anthropic use)."""
    if type(exc).__name__ == "ContextWindowExceededError":
        return True
    status = _http_status(exc)
    return status is not None and 400 <= status < 500 and _CONTEXT.search(str(exc)) is not None


def _rejects(exc: BaseException) -> bool:
    """Whether an error is how a server refuses a request's form (REJECTS): not a network or load problem, nor
    a body that is not JSON, nor messages too long for the model."""
    if _is_timeout(exc) or _is_connection_error(exc) or any(isinstance(e, json.JSONDecodeError) for e in _chain(exc)):
        return False
    if _context_too_long(exc):
        return False
    return _http_status(exc) in REJECTS


def _retry_after(exc: BaseException) -> float:
    """The Retry-After of the response behind a litellm error, in seconds, or 0."""
    return retry.retry_after_s(getattr(exc, "litellm_response_headers", None))


def _reason(exc: BaseException, timeout_s: float) -> str:
    """One line saying what went wrong, without litellm's prefixes and links."""
    if _is_timeout(exc):
        return f"timed out after {timeout_s:g} s"
    if _is_connection_error(exc):
        root = _chain(exc)[-1]
        text = getattr(root, "strerror", None) or str(root) or "connection error"
        return text.lower()
    message = str(getattr(exc, "message", None) or exc)
    # litellm prefixes messages like "litellm.RateLimitError: RateLimitError: OpenAIException - ..."
    message = re.sub(r"^(litellm\.\w+:\s*)?(\w+Error:\s*)?", "", message.split("Exception - ", 1)[-1])
    first = next((line.strip() for line in message.splitlines() if line.strip()), type(exc).__name__)
    status = getattr(exc, "status_code", None)
    line = f"HTTP {status}: {first}" if isinstance(status, int) else f"{type(exc).__name__}: {first}"
    return line[:300]

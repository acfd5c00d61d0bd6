"""Every model call goes through here: litellm, with retries, a budget, and a recorder so no call is paid for twice.

A call is identified by its request key (model, api base, messages, temperature and a caller's key). A call
already recorded under that key is replayed from the recorder: a killed run resumes without asking again.
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
    evaluated: int = 0
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

    def reserve_evaluation(self) -> None:
        """Take one evaluation from the budget before it starts, or raise BudgetExceeded when none is left.

        Reserved, not counted after: with several ideas in flight, checking first and counting later
        would let each of them start the last one.
        """
        with self._lock:
            if self.evaluations is not None and self.evaluated >= self.evaluations:
                raise BudgetExceeded(f"evaluation budget of {self.evaluations} reached")
            self.evaluated += 1

    def refund_evaluation(self) -> None:
        """Give back a reservation that computed nothing (the run was reused from the store)."""
        with self._lock:
            self.evaluated -= 1


class Recorder(Protocol):
    """Where calls are kept by request key: the SQLite store in a run, a dict in tests."""

    def lookup(self, key: str) -> dict | None: ...

    def record(self, key: str, call: dict) -> None: ...


class LLM:
    """One model, called through litellm with retries, budget checks and recording."""

    def __init__(self, model: str, *, recorder: Recorder, budget: Budget, api_base: str | None = None,
                 max_retries: int = 5, timeout_s: float = 120.0, backoff_s: float = 1.0):
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

    def chat(self, stage: str, messages: list[dict], *, temperature: float = 0.7, key: str = "") -> str:
        """Ask the model; return its answer text. A recorded identical call is replayed for free."""
        rkey = self.request_key(messages, temperature, key)
        recorded = self.recorder.lookup(rkey)
        if recorded is not None:
            return recorded["response"]
        resp, latency = self._complete(messages, temperature)
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
        })
        return text

    def _complete(self, messages: list[dict], temperature: float) -> tuple[Any, float]:
        """Call litellm under the retry policy (base/retry.py); return (response, latency)."""
        litellm = _litellm()
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages, temperature=temperature,
                                      api_base=self.api_base, timeout=self.timeout_s, num_retries=0)
        api_key = _api_key(litellm, self.model, self.api_base)
        if api_key:
            kwargs["api_key"] = api_key

        def attempt() -> tuple[Any, float]:
            start = time.monotonic()
            return litellm.completion(**kwargs), time.monotonic() - start

        try:
            # The budget is checked before every try and every wait: waiting out an outage must not overrun it.
            return retry.call(attempt, retries=self.max_retries, retryable=_retryable, retry_after=_retry_after,
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


class InvalidAnswer(Exception):
    """The model gave no parsable answer within the allowed tries; `error` is the last parse error."""

    def __init__(self, error: str, tries: int):
        super().__init__(f"no valid answer in {tries} tries: {error}")
        self.error, self.tries = error, tries


def ask_parsed(llm: LLM, stage: str, messages: list[dict], parse: Callable[[str], T], *, tries: int,
               temperature: float, reask: Callable[[str], str], errors: tuple[type[Exception], ...],
               key: str | None = None) -> tuple[T, str]:
    """Ask, parse, and on a bad answer send `reask(error)` back; the exchange stays in `messages`.

    Returns (parsed, text). With `key`, each try is a distinct request (`key:0`, `key:1`, ...), so
    an ensemble asking the same question keeps its answers apart. Raises InvalidAnswer after `tries`.
    """
    error = ""
    for attempt in range(tries):
        text = llm.chat(stage, messages, temperature=temperature, key="" if key is None else f"{key}:{attempt}")
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

"""One retry policy for calls over the network: model calls (base/llm.py) and literature searches.

Transient failures (rate limits, timeouts, connection errors, 5xx) are retried a bounded number of times, with
exponential backoff, capped and jittered, and never sooner than a server's Retry-After asks. A budget, when
given, is checked before every try and before every wait, so retrying never sleeps past it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import tenacity

MAX_BACKOFF_S = 30.0

T = TypeVar("T")


class Limit(Protocol):
    """What may stop retrying early: base.llm.Budget (a protocol here, as base.llm imports this module)."""

    def check(self, wait_s: float = 0.0) -> None:
        """Raise when the limit is reached, or would be after waiting wait_s seconds."""
        ...


class RetriesExhausted(Exception):
    """Every try failed with a retryable error; `last` is the last one."""

    def __init__(self, last: BaseException, retries: int):
        super().__init__(f"failed after {retries} retries: {last}")
        self.last, self.retries = last, retries


def retryable_status(status: object) -> bool:
    """Whether an HTTP status is worth retrying: request timeout, rate limit or a server error."""
    return isinstance(status, int) and (status in (408, 429) or status >= 500)


def retry_after_s(headers: Mapping[str, str] | None) -> float:
    """A response's Retry-After in seconds, or 0 when absent or not a number of seconds."""
    try:
        seconds = float((headers or {}).get("retry-after", 0))  # httpx.Headers ignore the name's case
    except (TypeError, ValueError, AttributeError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def call(fn: Callable[[], T], *, retries: int, retryable: Callable[[BaseException], bool],
         retry_after: Callable[[BaseException], float] = lambda exc: 0.0, backoff_s: float = 1.0,
         max_backoff_s: float = MAX_BACKOFF_S, limit: Limit | None = None,
         sleep: Callable[[float], None] = time.sleep) -> T:
    """Return fn(), retrying it up to `retries` times on the errors that `retryable` accepts.

    Any other error propagates at once; when the last retry fails too, RetriesExhausted holds its error. The
    wait before retry n (from 0) is backoff_s * 2**n, at least retry_after(error), at most max_backoff_s, plus up
    to 10% jitter. `limit.check()` runs before every try and `limit.check(wait)` before every wait, so a budget
    raises its own error (BudgetExceeded) instead of being overrun by waiting out an outage.
    """

    def wait(state: tenacity.RetryCallState) -> float:
        assert state.outcome is not None  # tenacity waits only after a failed try
        exc = state.outcome.exception()
        delay = max(backoff_s * 2 ** (state.attempt_number - 1), retry_after(exc) if exc else 0.0)
        return min(max_backoff_s, delay) * (1 + random.uniform(0, 0.1))  # jitter: parallel callers out of step

    def before_try(state: tenacity.RetryCallState) -> None:
        if limit is not None:
            limit.check()

    def before_wait(state: tenacity.RetryCallState) -> None:
        if limit is not None and state.next_action is not None:
            limit.check(state.next_action.sleep)

    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(retries + 1), wait=wait,
                                 retry=tenacity.retry_if_exception(retryable), before=before_try,
                                 before_sleep=before_wait, sleep=sleep)
    try:
        return retrying(fn)
    except tenacity.RetryError as e:
        raise RetriesExhausted(e.last_attempt.exception() or e, retries) from None

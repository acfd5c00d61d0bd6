"""Literature search for the novelty check: Semantic Scholar or OpenAlex, retried as model calls are (base/retry.py).

Results are cached in the store by (source, query), so a resumed session sees
the same papers (and so asks the model the same question, answered from the
record) and a rate-limited API is not asked twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

from base import retry

SOURCES = {
    "semantic-scholar": "https://api.semanticscholar.org",
    "openalex": "https://api.openalex.org",
}


class LiteratureError(Exception):
    """The literature API could not be used; one-line message."""


@dataclass(frozen=True)
class Paper:
    title: str
    year: int | None
    venue: str
    url: str
    citations: int | None
    abstract: str = ""


def _semantic_scholar(base: str, query: str, limit: int, api_key: str | None) -> tuple[str, dict, dict]:
    params = {"query": query, "limit": limit, "fields": "title,year,venue,url,citationCount,abstract"}
    headers = {"x-api-key": api_key} if api_key else {}
    return f"{base.rstrip('/')}/graph/v1/paper/search", params, headers


def _parse_semantic_scholar(data: dict) -> list[Paper]:
    return [Paper(p.get("title") or "", p.get("year"), p.get("venue") or "", p.get("url") or "",
                  p.get("citationCount"), (p.get("abstract") or "")[:500]) for p in data.get("data") or []]


def _openalex(base: str, query: str, limit: int, api_key: str | None) -> tuple[str, dict, dict]:
    params = {"search": query, "per-page": limit}
    if api_key:
        params["mailto"] = api_key  # OpenAlex's polite pool is keyed by an e-mail address
    return f"{base.rstrip('/')}/works", params, {}


def _parse_openalex(data: dict) -> list[Paper]:
    papers = []
    for w in data.get("results") or []:
        source = ((w.get("primary_location") or {}).get("source") or {}).get("display_name") or ""
        papers.append(Paper(w.get("display_name") or w.get("title") or "", w.get("publication_year"), source,
                            w.get("id") or "", w.get("cited_by_count")))
    return papers


_API: dict[str, tuple[Callable, Callable]] = {
    "semantic-scholar": (_semantic_scholar, _parse_semantic_scholar),
    "openalex": (_openalex, _parse_openalex),
}


def search(source: str, query: str, *, base_url: str | None = None, api_key: str | None = None, limit: int = 5,
           retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 30.0,
           budget: retry.Limit | None = None) -> list[Paper]:
    """The top papers for a query; 429s, 5xx and network errors are retried by the policy of base/retry.py.

    With a budget (base.llm.Budget), a retry wait that would pass it raises BudgetExceeded instead.
    """
    if source not in _API:
        raise LiteratureError(f"unknown literature source {source!r}; choose {' or '.join(SOURCES)}")
    build, parse = _API[source]
    url, params, headers = build(base_url or SOURCES[source], query, limit, api_key)

    def get() -> httpx.Response:
        resp = httpx.get(url, params=params, headers=headers, timeout=timeout_s)
        if retry.retryable_status(resp.status_code):  # raised, so that the policy retries it
            raise httpx.HTTPStatusError(f"HTTP {resp.status_code}", request=resp.request, response=resp)
        return resp

    try:
        # Capped at 60 s, not the model calls' 30: a public API's Retry-After can ask for a minute.
        resp = retry.call(get, retries=retries, retryable=lambda e: isinstance(e, httpx.HTTPError),
                          retry_after=_retry_after, backoff_s=backoff_s, max_backoff_s=60.0, limit=budget)
    except retry.RetriesExhausted as e:
        raise LiteratureError(f"{source} at {url} failed after {retries} retries: {_problem(e.last)}") from None
    if resp.status_code != 200:
        raise LiteratureError(f"{source} at {url} refused the search: HTTP {resp.status_code}")
    try:
        return parse(resp.json())
    except (ValueError, AttributeError) as e:
        raise LiteratureError(f"{source} at {url} answered with unreadable data: {e}") from None


def _retry_after(exc: BaseException) -> float:
    """The Retry-After of a 429 or 5xx answer, in seconds, or 0."""
    return retry.retry_after_s(exc.response.headers) if isinstance(exc, httpx.HTTPStatusError) else 0.0


def _problem(exc: BaseException) -> str:
    """One line for the last failure: the HTTP status, or the network error."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def cached_search(store, source: str, query: str, **kwargs) -> list[Paper]:
    """`search`, answered from the store when the same query was made before."""
    key = f"{source}:{query}"
    hit = store.db.execute("SELECT response FROM literature WHERE key=?", (key,)).fetchone()
    if hit is not None:
        return [Paper(**p) for p in json.loads(hit[0])]
    papers = search(source, query, **kwargs)
    store.db.execute("INSERT OR REPLACE INTO literature (key, response, created) VALUES (?,?,?)",
                     (key, json.dumps([asdict(p) for p in papers]), time.time()))
    return papers

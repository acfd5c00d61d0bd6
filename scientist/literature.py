"""Literature search for the novelty check: Semantic Scholar or OpenAlex, with backoff on 429s.

Results are cached in the store by (source, query), so a resumed session sees
the same papers (and so asks the model the same question, answered from the
record) and a rate-limited API is not asked twice.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import httpx

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
           retries: int = 5, backoff_s: float = 1.0, timeout_s: float = 30.0) -> list[Paper]:
    """The top papers for a query; retries 429s, 5xx and network errors with exponential backoff."""
    if source not in _API:
        raise LiteratureError(f"unknown literature source {source!r}; choose {' or '.join(SOURCES)}")
    build, parse = _API[source]
    url, params, headers = build(base_url or SOURCES[source], query, limit, api_key)
    problem = ""
    for attempt in range(retries + 1):
        try:
            resp = httpx.get(url, params=params, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as e:
            problem = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        else:
            if resp.status_code == 200:
                try:
                    return parse(resp.json())
                except (ValueError, AttributeError) as e:
                    raise LiteratureError(f"{source} at {url} answered with unreadable data: {e}") from None
            if resp.status_code != 429 and resp.status_code < 500:
                raise LiteratureError(f"{source} at {url} refused the search: HTTP {resp.status_code}")
            problem = f"HTTP {resp.status_code}"
            retry_after = resp.headers.get("retry-after", "")
            if attempt < retries and retry_after.replace(".", "", 1).isdigit():
                time.sleep(min(float(retry_after), 60.0))
                continue
        if attempt < retries:
            time.sleep(min(backoff_s * 2**attempt, 60.0) * (1 + 0.1 * random.random()))
    raise LiteratureError(f"{source} at {url} failed after {retries} retries: {problem}")


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

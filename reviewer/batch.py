"""Review many papers, concurrently up to a bound, one JSON result per paper; a bad paper never stops the batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from base.formats import FormatError
from base.llm import LLM, Budget, BudgetExceeded, FormMemory, LLMError, MemoryForms, ModelSpec
from base.records import SessionSummary
from base.store import Store
from reviewer import ai_scientist
from reviewer.pdf import Paper, PaperError, load_paper
from reviewer.review import PROTOCOL_MAX_CHARS, CountingRecorder, ReviewFailed, ReviewSettings, Usage, review

CLAIMS_MISMATCH = "cannot be accepted: the paper's claims do not match its logged results"


def run_context(run_dir: Path, pdf: Path, summary: SessionSummary | None = None) -> tuple[str, str | None]:
    """For a paper made by this framework: its claim-check report and sealed results for the reviewer.

    Returns (context text, a reason to force Reject or None). The session's summary is read from
    run_dir unless given. Raises PaperError if the paper is not one of the run folder's papers.
    """
    summary = summary or SessionSummary.read(run_dir)
    for idea in summary.ideas:
        if idea.paper is not None and idea.paper.pdf and Path(idea.paper.pdf).resolve() == pdf.resolve():
            claims = json.loads(Path(idea.paper.claim_check).read_text())
            unverified = claims["claims"]["unverified"]
            best = idea.best.model_dump() if idea.best else None
            baseline = summary.baseline.model_dump() if summary.baseline else None
            lines = [
                "This paper was written by an automated research pipeline. Its sealed results (computed by an "
                "evaluator the experiment code could not touch) and its claim-check report follow.",
                f"Best result: {json.dumps(best, default=str)[:3000]}",
                f"Baseline: {json.dumps(baseline, default=str)}",
                f"Claim check: {claims['claims']['checked']} numbers checked, {claims['claims']['verified']} "
                f"matched a logged value, {len(unverified)} unverified; sentences struck for unverified numbers: "
                f"{len(claims.get('struck_sentences', []))}.",
            ]
            return "\n".join(lines), (CLAIMS_MISMATCH if unverified else None)
    raise PaperError(f"{pdf.name}: not one of the papers of {run_dir}")


def review_with_protocol(llm: LLM, paper: Paper, settings: ReviewSettings, context: str = "",
                         force_reject: str | None = None) -> dict:
    """Review one loaded paper by the settings' protocol (ai-scientist or ensemble; docs/reviewer.md)."""
    run = ai_scientist.review if settings.protocol == "ai-scientist" else review
    return run(llm, paper, settings, context=context, force_reject=force_reject)


def review_one_paper(path: Path, make_llm: Callable[[Usage], LLM], settings: ReviewSettings,
                     run_dir: Path | None = None, max_chars: int | None = None,
                     summary: SessionSummary | None = None) -> dict:
    """Load, guard and review one paper; every failure is a result with a one-line error, not an exception.

    max_chars None: the protocol's (PROTOCOL_MAX_CHARS: no cut for ai-scientist, 60,000 for ensemble)."""
    usage = Usage()
    result: dict = {"paper": str(path), "status": "error", "error": None}
    try:
        paper = load_paper(path, max_chars=PROTOCOL_MAX_CHARS[settings.protocol] if max_chars is None else max_chars)
        result.update(injection_flags=paper.injection_flags, truncated=paper.truncated, note=paper.note)
        context, force = run_context(run_dir, path, summary) if run_dir is not None else ("", None)
        llm = make_llm(usage)
        result.update(review_with_protocol(llm, paper, settings, context=context, force_reject=force), status="ok",
                      model=llm.model)
    except (PaperError, ReviewFailed, LLMError, FormatError, OSError, ValueError, KeyError) as e:
        result["error"] = " ".join(str(e).split()) or type(e).__name__
    except BudgetExceeded as e:
        result["error"] = f"budget: {e}"
    result["usage"] = usage.to_json()
    return result


class ReviewRequest(BaseModel):
    """What `scientist review` was asked, validated: the papers, the model and how to call it, the batch's bounds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    papers: list[Path]
    model: str
    api_base: str | None = None
    retries: int = Field(5, ge=0)
    structured: Literal["auto", "on", "off"] = "auto"
    max_tokens: int | None = Field(None, ge=1)
    concurrency: int = Field(4, ge=1)
    budget_usd: float | None = Field(None, gt=0)
    run_dir: Path | None = None      # the `scientist run` folder the papers come from: its logs are checked
    max_chars: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _usable(self) -> ReviewRequest:
        if not self.papers:
            raise ValueError("no papers given (pass PDF files, or --calibrate LABELS.csv)")
        if self.run_dir is not None and not (self.run_dir / "summary.json").is_file():
            raise ValueError(f"{self.run_dir} holds no summary.json; --run-dir takes a folder written by "
                             "scientist run")
        return self

    def model_spec(self) -> ModelSpec:
        """The reviewing model as the one model factory takes it."""
        return ModelSpec(self.model, api_base=self.api_base, retries=self.retries, structured=self.structured,
                         max_tokens=self.max_tokens)


def review_batch(req: ReviewRequest, settings: ReviewSettings, store: Store,
                 on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Review the request's papers with the store's call log and response-format memory, within its budget."""
    make_llm = llm_factory(req.model_spec(), recorder=store.recorder(None), budget=Budget(usd=req.budget_usd),
                           forms=store.response_forms())
    return review_papers(req.papers, make_llm, settings, concurrency=req.concurrency, run_dir=req.run_dir,
                         max_chars=req.max_chars, on_result=on_result)


def review_papers(paths: list[Path], make_llm: Callable[[Usage], LLM], settings: ReviewSettings, *,
                  concurrency: int = 4, run_dir: Path | None = None, max_chars: int | None = None,
                  on_result: Callable[[dict], None] | None = None) -> list[dict]:
    """Review every paper (in parallel up to `concurrency`); results in the order of `paths`."""
    def work(path: Path) -> dict:
        res = review_one_paper(path, make_llm, settings, run_dir, max_chars)
        if on_result is not None:
            on_result(res)
        return res

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(work, paths))


def llm_factory(spec: ModelSpec, *, recorder, budget, forms: FormMemory | None = None) -> Callable[[Usage], LLM]:
    """One LLM per paper, sharing the store's call log, the budget and what the server's response_format is
    (`forms`: the store's table, else one memory for the batch), counting that paper's usage."""
    forms = forms if forms is not None else MemoryForms()

    def make(usage: Usage) -> LLM:
        return spec.client(recorder=CountingRecorder(recorder, usage), budget=budget, forms=forms)

    return make


class JsonLines:
    """One JSON object per line, appended as results arrive (from several threads): nothing is lost on a stop."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def append(self, record: dict) -> None:
        with self._lock, self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

"""Nightly discovery campaigns: `scientist nightly CAMPAIGN.toml`, one night at a time, confirmed bests.

A campaign is a name in the store. Each night is a `scientist run` session tagged with it, in a
numbered, dated folder under <home>/campaigns/<name>/nights/; it proposes from the campaign's
archive (every earlier night's ideas with their sealed results), so night 2 starts where night 1
ended, and the evolve proposer draws another seed each night. After the search, a candidate that
beats the campaign's best is trained and scored again on the night's own fresh seeds (FreshSeeds:
another [config] train_seed and another draw of the home's [private] secrets, so other training
and held-out data, `confirm_seeds` of them; none used by the search or an earlier night) beside
the baseline and the previous best re-run on the same seeds, before it is called a new best: the
maximum of many noisy runs is biased upwards (the winner's curse), a fresh draw is not. A new best
is significantly better than both (one Holm family per night). Results are kept by the template's
content hash: the leaderboard ranks those of the current version only, and starts over when the
template changes.

One night at a time: a lock per campaign (flock, so a killed holder releases it by dying); a
second invocation exits with EXIT_LOCKED naming the holder. A night left unfinished by a killed
process is resumed by the next invocation (finished runs reused), which counts as that night.
"""

from __future__ import annotations

import difflib
import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from base.events import ConfirmationDone, FreshSeedsDrawn, Reporter, Stage
from base.records import Comparison, SessionSummary
from base.results import ConfirmationResult, PreviousBest
from base.secrets import secret_keys
from base.stats import better, compare, holm
from base.store import Run, Store
from base.template import DEFAULT_TEMPLATES_DIR, Template, TemplateError, load_template
from sandbox.backends import Sandbox
from scientist import runner
from scientist.config import RunConfig
from scientist.digest import (
    Digest,
    DigestError,
    LeaderRow,
    Link,
    NewBest,
    SeriesPoint,
    digest_from_run,
    render_html,
    render_markdown,
    write_index,
)
from scientist.session import EXIT_BUDGET, EXIT_OK, run_session

EXIT_LOCKED = 4  # another night of this campaign is running


class CampaignError(Exception):
    """A campaign file that cannot be used, or a campaign that cannot start; one line for the user."""


class NightRunning(Exception):
    """Another process holds the campaign's lock: its pid and start time, in one line."""


class NightBudget(BaseModel):
    """Per night; the night stops cleanly at the first one reached."""

    model_config = ConfigDict(extra="forbid")

    minutes: float | None = Field(None, gt=0)
    usd: float | None = Field(None, ge=0)  # 0: spend nothing (no model call; an evolve night needs none)
    evaluations: int | None = Field(None, ge=1)


class DigestSettings(BaseModel):
    """Where the digest goes and what to run when it is written."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = None          # default: the campaign's folder; relative to the campaign file
    # A shell command run when a night's digest is written; {markdown}, {html}, {index}, {name} and
    # {night} are replaced (e.g. to mail the Markdown or post the HTML).
    on_written: str | None = None


class CampaignConfig(BaseModel):
    """A campaign file (TOML), validated: everything `scientist nightly` needs, no other flag."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    template: str
    templates_dir: Path | None = None
    proposer: Literal["llm", "evolve"] | None = None    # default: llm with a model, else evolve
    model: str | None = None
    api_base: str | None = None
    seeds: int | None = Field(None, ge=2)                # default: the template's
    confirm_seeds: int = Field(8, ge=2)
    test: Literal["welch", "paired"] = "welch"           # against the baseline, as scientist run --test
    confirm_top: int = Field(3, ge=1)                    # at most this many confirmations a night
    ideas: int = Field(3, ge=1)                          # at most, per night
    runs: int = Field(3, ge=1)
    attempts: int = Field(4, ge=1)
    reflections: int = Field(3, ge=0)
    workers: int | None = Field(None, ge=1)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    sandbox: Literal["auto", "docker", "bwrap", "process"] = "auto"
    image: str | None = None
    gpus: str | None = None
    profile: str | None = None
    writeup: bool = True
    review: bool = True
    review_protocol: Literal["ai-scientist", "ensemble"] = "ai-scientist"   # as scientist run --review-protocol
    structured: Literal["auto", "on", "off"] = "auto"    # structured outputs, as scientist run --structured
    max_tokens: int | None = Field(None, ge=1)           # per model answer, as scientist run --max-tokens
    budget: NightBudget = NightBudget()
    digest: DigestSettings = DigestSettings()


def load_campaign(path: Path) -> CampaignConfig:
    """Read and validate a campaign file; CampaignError with one line naming the field."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such campaign file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CampaignError(f"{path}: cannot be read ({type(e).__name__})") from None
    except tomllib.TOMLDecodeError as e:
        raise CampaignError(f"{path}: not valid TOML ({e})") from None
    try:
        campaign = CampaignConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        problem = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise CampaignError(f"{path}: field '{where}': {problem}") from None
    # Relative paths are the campaign file's, not cron's working folder.
    here = path.resolve().parent
    if campaign.digest.dir is not None and not campaign.digest.dir.is_absolute():
        campaign = campaign.model_copy(update={"digest": campaign.digest.model_copy(
            update={"dir": (here / campaign.digest.dir).resolve()})})
    if campaign.templates_dir is not None and not campaign.templates_dir.is_absolute():
        campaign = campaign.model_copy(update={"templates_dir": (here / campaign.templates_dir).resolve()})
    if ("/" in campaign.template or campaign.template.startswith(".")) and not Path(campaign.template).is_absolute():
        campaign = campaign.model_copy(update={"template": str((here / campaign.template).resolve())})
    if campaign.proposer == "llm" and not campaign.model:
        raise CampaignError(f"{path}: field 'model': proposer = \"llm\" needs a model (e.g. \"openai/gpt-4o\")")
    return campaign


def campaign_dir(home: Path, name: str) -> Path:
    """Where a campaign's nights, lock and index live."""
    return home / "campaigns" / name


@dataclass
class NightLock:
    """The campaign's lock: held for the whole night; the kernel releases it when its holder dies."""

    path: Path
    _fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            try:
                info = json.loads(holder)
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
                who = f"pid {info['pid']}, started {since}"
            except (ValueError, KeyError, TypeError):
                who = "a process that is starting"
            raise NightRunning(f"another night of this campaign is running ({who}); "
                               f"its lock is {self.path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.time()}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


@dataclass(frozen=True)
class Night:
    """Which night this invocation runs: a new one, or one a killed process left unfinished."""

    index: int
    out_dir: Path
    resumed: bool


def next_night(store: Store, name: str, root: Path, today: str | None = None) -> Night:
    """The night to run now: the unfinished one if a killed process left it, else a new dated folder."""
    nights = store.campaign_nights(name)
    for i, night in enumerate(nights, start=1):
        if night["status"] == "running":  # we hold the lock, so its process is gone
            return Night(i, Path(night["out_dir"]), resumed=True)
    index = len(nights) + 1
    return Night(index, root / "nights" / f"{index:03d}-{today or time.strftime('%Y-%m-%d')}", resumed=False)


def best_known(store: Store, campaign: str, version: str | None = None) -> tuple[str, dict[str, str]] | None:
    """The campaign's confirmed best (of this template version) as the LLM proposer is shown it: what, and its files."""
    best = current_best(store, campaign, version)
    run = store.get(best["run_id"]) if best else None
    if run is None:
        return None
    r = best["result"]
    return (f"idea {best['idea']} of night {r.night or '?'}: {r.metric} = {r.mean:.4f} ± {r.stderr:.4f} "
            f"on {r.n} fresh seeds, against {r.baseline_mean:.4f} for the shipped code", run.candidate_source)


def night_config(campaign: CampaignConfig, template: Template, sandbox: Sandbox, home: Path, night: Night,
                 workers: int, best: tuple[str, dict[str, str]] | None = None) -> RunConfig:
    """The night's `scientist run` configuration: the campaign's settings, the night's folder and seed."""
    proposer = campaign.proposer or ("llm" if campaign.model else "evolve")
    return RunConfig(
        template=template, proposer=proposer, model=campaign.model, api_base=campaign.api_base,
        ideas=campaign.ideas, runs=campaign.runs, attempts=campaign.attempts, reflections=campaign.reflections,
        seeds=campaign.seeds or template.spec.seeds, test=campaign.test, sandbox=sandbox, home=home,
        out_dir=night.out_dir,
        budget_usd=campaign.budget.usd, budget_minutes=campaign.budget.minutes,
        budget_evaluations=campaign.budget.evaluations,
        seed=night.index,  # the evolve proposer draws other genomes each night
        writeup=campaign.writeup, writer="llm" if proposer == "llm" else "template",
        review=campaign.review, review_protocol=campaign.review_protocol, structured=campaign.structured,
        max_tokens=campaign.max_tokens,
        workers=workers, executor=campaign.executor, ray_address=campaign.ray_address,
        campaign=campaign.name, best_known=best)


@dataclass(frozen=True)
class FreshSeeds:
    """What one night's confirmations run on: seeds that no search and no earlier night of the campaign used."""

    night: int               # the night's index in the campaign, as the store numbers its sessions
    train_seed: int | None   # the [config] train_seed; None when the template has none
    draw: int                # the draw of the home's [private] secrets (base.secrets): fresh held-out and data seeds


def _derived(campaign: str, night: int, what: str, attempt: int) -> int:
    digest = hashlib.sha256(f"confirm:{campaign}:{night}:{what}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1 or 1  # 31 bits and never 0: every harness's PRNGKey takes it


def night_index(store: Store, campaign: str, session_id: int) -> int:
    """The night's number in the campaign (1, 2, ...): its session's place among the campaign's sessions."""
    ids = [n["id"] for n in store.campaign_nights(campaign)]
    if session_id not in ids:
        raise CampaignError(f"session {session_id} is not a night of campaign {campaign}")
    return ids.index(session_id) + 1


def fresh_seeds(store: Store, campaign: str, session_id: int, template: Template) -> FreshSeeds:
    """The night's confirmation seeds: a train_seed and a secrets draw that no search and no earlier night used.

    Both are derived from (campaign, night number), so a killed night that is resumed gets its own
    again (and its finished runs are reused), and checked against what the store records for every
    earlier night and the search's own (the template's train_seed, draw 0): a collision, one in 2^31,
    takes the next derived value.
    """
    night = night_index(store, campaign, session_id)
    earlier = [c for c in store.confirmations(campaign) if c["session_id"] != session_id]
    seeds_used = {c["train_seed"] for c in earlier} | {template.spec.config.get("train_seed")}
    draws_used = {c["draw"] for c in earlier} | {0}
    train_seed = None
    if "train_seed" in template.spec.config:
        train_seed = next(s for a in range(100) if (s := _derived(campaign, night, "train_seed", a)) not in seeds_used)
    draw = next(d for a in range(100) if (d := _derived(campaign, night, "draw", a)) not in draws_used)
    return FreshSeeds(night, train_seed, draw)


def check_confirmable(template: Template) -> None:
    """CampaignError unless the template has something random a confirmation can draw afresh."""
    if "train_seed" not in template.spec.config and not secret_keys(template.spec.private):
        raise CampaignError(f"template {template.name} has neither a [config] train_seed nor [private] seeds, so a "
                            "confirmation could not run on fresh seeds (docs/templates.md)")


def confirmation_template(template: Template, fresh: FreshSeeds) -> Template:
    """The template with the night's train_seed (the draw goes with each request): another content hash."""
    check_confirmable(template)
    if fresh.train_seed is None:
        return template
    config = {**template.spec.config, "train_seed": fresh.train_seed}
    return replace(template, spec=template.spec.model_copy(update={"config": config}))


@dataclass
class Confirmed:
    """One confirmation of a night: the search's best run of an idea, evaluated again on fresh seeds."""

    idea: str
    search_run: Run
    run: Run | None = None
    baseline: Run | None = None
    previous: Run | None = None      # the campaign's previous best, re-run on the same fresh seeds
    comparison: Comparison | None = None  # against the baseline, before Holm's adjustment
    result: ConfirmationResult | None = None
    new_best: bool = False
    reason: str | None = None


def current_version(store: Store, campaign: str) -> str | None:
    """The template content hash of the campaign's latest night: the version its leaderboard ranks."""
    nights = store.campaign_nights(campaign)
    return nights[-1]["template_hash"] if nights else None


def leaderboard(store: Store, campaign: str, version: str | None = None) -> list[dict]:
    """The campaign's re-evaluated results of one template version (default: the latest night's), best first.

    Failed confirmations are left out; so are those of other versions of the template, whose numbers
    measure other code (older_results lists them).
    """
    version = version or current_version(store, campaign)
    rows = [c for c in store.confirmations(campaign) if c["result"] is not None and c["template_hash"] == version]
    maximise = bool(rows) and rows[0]["result"].direction == "max"
    return sorted(rows, key=lambda c: c["result"].mean, reverse=maximise)


def older_results(store: Store, campaign: str, version: str | None = None) -> list[dict]:
    """The campaign's re-evaluated results of other template versions than this one, oldest first."""
    version = version or current_version(store, campaign)
    return [c for c in store.confirmations(campaign) if c["result"] is not None and c["template_hash"] != version]


def current_best(store: Store, campaign: str, version: str | None = None) -> dict | None:
    """The campaign's latest confirmed new best of one template version (default: the latest night's), or None."""
    version = version or current_version(store, campaign)
    bests = [c for c in store.confirmations(campaign) if c["new_best"] and c["template_hash"] == version]
    return bests[-1] if bests else None


# A confirmation's verdict against the baseline, as the digest's status column says it.
STATUS = {"better": "confirmed", "no significant difference": "re-evaluated, n.s.", "worse": "re-evaluated, worse"}


def confirm_night(cfg: RunConfig, campaign: CampaignConfig, store: Store, session_id: int,
                  summary: SessionSummary, report: Reporter) -> list[Confirmed]:
    """Evaluate again, on fresh seeds, the night's candidates that beat the campaign's best in the search.

    The fresh seeds (FreshSeeds: a train_seed and a draw of the held-out data) are the night's own.
    The baseline and the previous confirmed best of this template version are re-run on them. One
    Holm family holds the night's comparisons: each candidate against the baseline, and each candidate
    whose mean beats the previous best's re-run against it. A new best is significantly better than
    both; of several, the best mean.
    """
    metric, direction = cfg.template.spec.metric.name, cfg.template.spec.metric.direction
    version = cfg.template.content_hash()
    best = current_best(store, campaign.name, version)
    bar = (store.get(best["search_run_id"]).metric_mean if best
           else summary.baseline.mean if summary.baseline else None)
    if bar is None:
        return []
    done = {c["search_run_id"] for c in store.confirmations(campaign.name)}
    picked = [i for i in summary.ideas if i.best is not None and i.best.run_id not in done
              and better(i.best.metric.mean, bar, direction)]
    picked.sort(key=lambda i: i.best.metric.mean, reverse=direction == "max")
    picked = picked[:campaign.confirm_top]
    if not picked:
        return []
    fresh = fresh_seeds(store, campaign.name, session_id, cfg.template)
    template = confirmation_template(cfg.template, fresh)
    report.event(Stage(stage="confirming"))
    report.event(FreshSeedsDrawn(night=fresh.night, train_seed=fresh.train_seed, draw=fresh.draw))
    folder = cfg.out_dir / "confirm"

    def evaluate(name: str, sources: dict[str, str], kind: str = "candidate") -> runner.EvalResult:
        return runner.evaluate(runner.EvalRequest(
            template=template, sources=sources, seeds=campaign.confirm_seeds, sandbox=cfg.sandbox, home=cfg.home,
            out_dir=(folder / name).resolve(), kind=kind, label=f"confirm/{name}", draw=fresh.draw), store)

    base = evaluate("baseline", template.editable_sources(), kind="baseline")
    previous, previous_note = None, None
    if best is not None:
        previous_run = store.get(best["run_id"])
        previous = evaluate("previous_best", previous_run.candidate_source) if previous_run else None
        if previous is None or not previous.ok:
            why = previous.run.reason if previous else "its run is not in the store"
            previous_note = f"the previous best ({best['idea']}) failed on these seeds: {why}"
    out: list[Confirmed] = []
    for idea in picked:
        search = store.get(idea.best.run_id)
        c = Confirmed(idea=idea.name, search_run=search, baseline=base.run,
                      previous=previous.run if previous else None)
        res = evaluate(idea.name, search.candidate_source)
        c.run = res.run
        if not res.ok:
            c.reason = f"the confirmation run failed: {res.run.reason}"
        elif not base.ok:
            c.reason = f"the baseline failed on the confirmation seeds: {base.run.reason}"
        else:
            m, b = res.run.result.summary(metric), base.run.result.summary(metric)
            c.comparison = cmp = compare(m.values, b.values, direction, test=cfg.test)  # same seeds: paired
            c.result = ConfirmationResult(
                metric=metric, direction=direction, night=summary_night(cfg), mean=m.mean, stderr=m.stderr,
                ci95=m.ci95, n=m.n, baseline_mean=b.mean, test=cmp.test, p_value=cmp.p_value,
                difference=cmp.difference, alpha=cmp.alpha, train_seed=fresh.train_seed, draw=fresh.draw,
                previous=None if best is None else PreviousBest(
                    idea=best["idea"], night=best["result"].night, confirmation_id=best["id"], failed=previous_note))
        report.event(ConfirmationDone(idea=idea.name, search_mean=idea.best.metric.mean,
                                      mean=c.result.mean if c.result else None, reason=c.reason,
                                      verdict=c.comparison.verdict if c.comparison else None))
        out.append(c)
    scored = [c for c in out if c.result is not None]
    # One Holm family: every candidate against the baseline, and against the previous best where its
    # mean beats the previous best's re-run (elsewhere that test could not say "better" anyway).
    family: list[tuple[ConfirmationResult | PreviousBest, Comparison]] = [(c.result, c.comparison) for c in scored]
    if previous is not None and previous.ok:
        p = previous.run.result.summary(metric)
        for c in scored:
            prev = c.result.previous
            prev.run_id, prev.mean, prev.stderr, prev.ci95, prev.n = previous.run.id, p.mean, p.stderr, p.ci95, p.n
            # Not tested (its mean is not above the previous best's): no verdict, so never a new best.
            prev.verdict = prev.p_value_holm = None
            if better(c.result.mean, p.mean, direction):
                cmp = compare(c.run.result.summary(metric).values, p.values, direction, test=cfg.test)
                prev.test, prev.p_value, prev.difference = cmp.test, cmp.p_value, cmp.difference
                family.append((prev, cmp))
    for (r, cmp), p in zip(family, holm([cmp.p_value for _, cmp in family]), strict=True):
        r.p_value_holm = p
        r.verdict = ("no significant difference" if not p < cmp.alpha else
                     "better" if (cmp.difference > 0) == (direction == "max") else "worse")
    winners = [c for c in scored if c.result.verdict == "better"
               and (best is None or c.result.previous.verdict == "better")]
    if winners:
        winner = max(winners, key=lambda c: c.result.mean if direction == "max" else -c.result.mean)
        winner.new_best = True
    for c in out:
        store.save_confirmation(campaign=campaign.name, session_id=session_id, idea=c.idea,
                                search_run_id=c.search_run.id, run_id=c.run.id if c.run else None,
                                baseline_run_id=c.baseline.id if c.baseline else None, result=c.result,
                                new_best=c.new_best, reason=c.reason, template_hash=version, night=fresh.night,
                                train_seed=fresh.train_seed, draw=fresh.draw,
                                previous_run_id=c.previous.id if c.previous else None)
    return out


def summary_night(cfg: RunConfig) -> str:
    """A night's label: its folder's name (number and date)."""
    return cfg.out_dir.name


def load_night_template(campaign: CampaignConfig) -> Template:
    """The campaign's template as this hardware runs it; CampaignError when it cannot be loaded."""
    try:
        template = load_template(campaign.template, campaign.templates_dir or DEFAULT_TEMPLATES_DIR)
        template = template.for_hardware(campaign.profile, campaign.gpus)
    except TemplateError as e:
        raise CampaignError(str(e)) from None
    check_confirmable(template)  # checked now: before a night is spent, not after it
    return template


def run_night(campaign: CampaignConfig, cfg: RunConfig, store: Store, night: Night,
              report: Reporter) -> tuple[int, SessionSummary, list[Confirmed]]:
    """The night's session, then its confirmations; the exit code counts a reached budget as a night done."""
    code, summary = run_session(cfg, store, report)
    session = store.session_at(cfg.out_dir)
    confirmed: list[Confirmed] = []
    if summary.baseline is not None and code in (EXIT_OK, EXIT_BUDGET):
        confirmed = confirm_night(cfg, campaign, store, session["id"], summary, report)
    return (EXIT_OK if code == EXIT_BUDGET else code), summary, confirmed


@dataclass(frozen=True)
class Pages:
    """A night's digest, as files: Markdown, the self-contained HTML page, and the campaign's index."""

    markdown: Path
    html: Path
    index: Path


def _diff(old: dict[str, str], new: dict[str, str], old_label: str, new_label: str) -> str:
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        lines += difflib.unified_diff(old.get(name, "").splitlines(True), new.get(name, "").splitlines(True),
                                      f"{old_label}/{name}", f"{new_label}/{name}")
    return "".join(lines)


def _confirmed_row(store: Store, c: dict, page_dir: Path, best_id: int | None) -> LeaderRow:
    r, run = c["result"], store.get(c["run_id"])
    href = os.path.relpath(run.out_dir, page_dir) if run and run.out_dir else None
    # Idea names repeat across nights (evolve_000 every night): the night tells them apart.
    return LeaderRow(name=f"{c['idea']} ({r.night or '?'})", title=f"found on night {r.night or '?'}", mean=r.mean,
                     stderr=r.stderr, ci_low=r.ci95[0], ci_high=r.ci95[1], n=r.n, verdict=r.verdict,
                     p_value_holm=r.p_value_holm, status=STATUS[r.verdict], run=Link(text="run", href=href),
                     is_best=c["id"] == best_id)


def _metric_row(run: Run | None, metric: str, name: str, title: str) -> LeaderRow | None:
    m = run.result.summary(metric) if run and run.final_info else None
    return LeaderRow(name=name, title=title, mean=m.mean, stderr=m.stderr, ci_low=m.ci95[0],
                     ci_high=m.ci95[1], n=m.n) if m else None


def night_digest(campaign: CampaignConfig, store: Store, night: Night, page_dir: Path, home: Path) -> Digest:
    """The night's digest: the night's search (cost, failures, papers) and the campaign's re-evaluated results.

    Only the results of the night's template version are ranked; after a template change the page
    says that the leaderboard starts over, and lists the earlier versions' results apart.
    """
    d = digest_from_run(night.out_dir, page_dir=page_dir, home=home)
    session = store.session_at(night.out_dir)
    nights = store.campaign_nights(campaign.name)
    version = next(n["template_hash"] for n in nights if n["id"] == session["id"])
    first_of_version = not any(n["template_hash"] == version for n in nights if n["id"] < session["id"])
    bests = [c for c in store.confirmations(campaign.name) if c["new_best"] and c["template_hash"] == version]
    best = bests[-1] if bests else None
    rows = leaderboard(store, campaign.name, version)
    older = older_results(store, campaign.name, version)
    d.title = f"{campaign.name}: night {night.index}"
    d.generator = "scientist nightly"
    d.subtitle = f"{night.out_dir.name} · {d.subtitle}" if d.subtitle else night.out_dir.name
    if older and first_of_version:
        versions = ", ".join(sorted({c["template_hash"] or "unrecorded" for c in older}))
        d.notes.append(f"The template changed (version {version}; the campaign's {len(older)} earlier re-evaluated "
                       f"result(s) were of version {versions}): the leaderboard starts over, and no earlier "
                       "result is compared with this version's.")
    if older:
        d.older = [_confirmed_row(store, c, page_dir, None).model_copy(update={"title": c["template_hash"] or "?"})
                   for c in older]
    if rows:
        d.leaderboard = [_confirmed_row(store, c, page_dir, best["id"] if best else None) for c in rows]
        # The baseline on the seeds of this night's confirmations, else on those of the latest night that had some.
        shown = max(rows, key=lambda c: c["id"])
        d.baseline = _metric_row(store.get(shown["baseline_run_id"]), d.metric, "baseline",
                                 f"on the fresh seeds of {shown['result'].night or '?'}") or d.baseline
        d.subtitle += (" · leaderboard: the campaign's candidates re-evaluated on fresh seeds (each on its night's), "
                       "this template version only")
    else:
        d.subtitle += " · nothing re-evaluated on this template version yet: the leaderboard is this night's search"
    d.new_bests = []
    for i, c in enumerate(bests):
        if c["session_id"] != session["id"]:
            continue
        before = bests[i - 1] if i else None
        old = (store.get(before["run_id"]).candidate_source if before
               else store.get(c["baseline_run_id"]).candidate_source)
        new = store.get(c["run_id"]).candidate_source
        r = c["result"]
        prev = r.previous if before else None  # None too in results of early versions, which did not record it
        d.new_bests.append(NewBest(
            name=c["idea"], mean=r.mean, ci_low=r.ci95[0], ci_high=r.ci95[1], n=r.n,
            previous=(f"the previous best, {before['idea']} ({before['result'].night or '?'}), re-run on the "
                      "same seeds") if before else "baseline",
            previous_mean=(prev.mean if prev else None) if before else r.baseline_mean,
            previous_verdict=prev.verdict if prev else None,
            previous_p_value_holm=prev.p_value_holm if prev else None, verdict=r.verdict,
            diff=_diff(old, new, before["idea"] if before else "baseline", c["idea"])))
    d.series = []
    for n in nights:
        so_far = [c for c in bests if c["session_id"] <= n["id"]]
        if so_far and n["id"] <= session["id"]:
            r = so_far[-1]["result"]
            d.series.append(SeriesPoint(label=Path(n["out_dir"]).name, mean=r.mean, ci_low=r.ci95[0],
                                        ci_high=r.ci95[1]))
    return d


def write_digest(campaign: CampaignConfig, store: Store, night: Night, home: Path) -> Pages:
    """Write the night's digest (Markdown and HTML) and the campaign's index.html; CampaignError if it cannot."""
    root = campaign.digest.dir or campaign_dir(home, campaign.name)
    page_dir = campaign.digest.dir / night.out_dir.name if campaign.digest.dir else night.out_dir
    try:
        d = night_digest(campaign, store, night, page_dir, home)
    except DigestError as e:
        raise CampaignError(f"the digest of night {night.index} cannot be written: {e}") from None
    page_dir.mkdir(parents=True, exist_ok=True)
    md, html = page_dir / "digest.md", page_dir / "digest.html"
    md.write_text(render_markdown(d))
    html.write_text(render_html(d))
    pages = []
    for i, n in enumerate(store.campaign_nights(campaign.name), start=1):
        folder = Path(n["out_dir"])
        page = (campaign.digest.dir / folder.name if campaign.digest.dir else folder) / "digest.html"
        if page.is_file():
            pages.append((f"night {i}: {folder.name}", n["status"] + (f" ({n['reason']})" if n["reason"] else ""),
                          page))
    index = write_index(pages, root / "index.html", title=f"{campaign.name}: nights")
    return Pages(md, html, index)


def announce(campaign: CampaignConfig, night: Night, pages: Pages) -> str | None:
    """Run the campaign's on_written command for a written digest; returns a problem in one line, or None."""
    if not campaign.digest.on_written:
        return None
    command = campaign.digest.on_written
    for key, value in (("markdown", pages.markdown), ("html", pages.html), ("index", pages.index),
                       ("name", campaign.name), ("night", night.out_dir.name)):
        command = command.replace("{" + key + "}", shlex.quote(str(value)))
    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return "the digest's on_written command did not finish in 300 s"
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).split())[-300:]
        return f"the digest's on_written command exited with {done.returncode}: {tail}"
    return None

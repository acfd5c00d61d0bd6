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

import fcntl
import hashlib
import json
import os
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from base.events import ConfirmationDone, FreshSeedsDrawn, Reporter, Stage
from base.records import Comparison, IdeaOutcome, SessionSummary
from base.results import ConfirmationResult, PreviousBest
from base.secrets import secret_keys
from base.stats import Test, better, compare, holm_adjust
from base.store import Run, Store
from base.template import DEFAULT_TEMPLATES_DIR, Template, TemplateError, load_template
from sandbox.backends import Sandbox
from scientist import campaign_store as records
from scientist import runner
from scientist.config import RunConfig, Settings
from scientist.session import run_config

EXIT_LOCKED = 4  # another night of this campaign is running


class CampaignError(Exception):
    """A campaign file that cannot be used, or a campaign that cannot start; one line for the user."""


class NightRunning(Exception):
    """Another process holds the campaign's lock: its pid and start time, in one line."""


class DigestSettings(BaseModel):
    """Where the digest goes and what to run when it is written."""

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = None          # default: the campaign's folder; relative to the campaign file
    # A shell command run when a night's digest is written; {markdown}, {html}, {index}, {name} and
    # {night} are replaced (e.g. to mail the Markdown or post the HTML).
    on_written: str | None = None


class CampaignConfig(Settings):
    """A campaign file (TOML), validated: every `scientist run` setting (scientist.config.Settings, the same keys
    with underscores, [budget] per night), and the campaign's own keys. Nothing else is read."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    template: str
    templates_dir: Path | None = None
    runs: int = Field(3, ge=1)                           # fewer than a run's default: a night runs unattended
    confirm_seeds: int = Field(8, ge=2)
    confirm_top: int = Field(3, ge=1)                    # at most this many confirmations a night
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
        if not err["loc"]:  # a rule between settings, worded for flags: the same names as keys
            raise CampaignError(f"{path}: {err['msg'].removeprefix('Value error, ').replace('--', '')}") from None
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
    nights = records.nights(store, name)
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
                 best: tuple[str, dict[str, str]] | None = None) -> RunConfig:
    """The night's `scientist run` configuration: the campaign's settings, the night's folder and seed."""
    return run_config(campaign, template, sandbox, home=home, out_dir=night.out_dir,
                      seed=campaign.seed + night.index,  # the evolve proposer draws other genomes each night
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
    ids = [n["id"] for n in records.nights(store, campaign)]
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
    earlier = [c for c in records.confirmations(store, campaign) if c["session_id"] != session_id]
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
    nights = records.nights(store, campaign)
    return nights[-1]["template_hash"] if nights else None


def leaderboard(store: Store, campaign: str, version: str | None = None) -> list[dict]:
    """The campaign's re-evaluated results of one template version (default: the latest night's), best first.

    Failed confirmations are left out; so are those of other versions of the template, whose numbers
    measure other code (older_results lists them).
    """
    version = version or current_version(store, campaign)
    rows = [c for c in records.confirmations(store, campaign)
            if c["result"] is not None and c["template_hash"] == version]
    maximise = bool(rows) and rows[0]["result"].direction == "max"
    return sorted(rows, key=lambda c: c["result"].mean, reverse=maximise)


def older_results(store: Store, campaign: str, version: str | None = None) -> list[dict]:
    """The campaign's re-evaluated results of other template versions than this one, oldest first."""
    version = version or current_version(store, campaign)
    return [c for c in records.confirmations(store, campaign)
            if c["result"] is not None and c["template_hash"] != version]


def current_best(store: Store, campaign: str, version: str | None = None) -> dict | None:
    """The campaign's latest confirmed new best of one template version (default: the latest night's), or None."""
    version = version or current_version(store, campaign)
    bests = [c for c in records.confirmations(store, campaign) if c["new_best"] and c["template_hash"] == version]
    return bests[-1] if bests else None


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
    picked = _worth_confirming(store, campaign, summary, best, direction)
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
    _holm_family(scored, previous.run if previous is not None and previous.ok else None, metric, direction, cfg.test)
    winners = [c for c in scored if c.result.verdict == "better"
               and (best is None or c.result.previous.verdict == "better")]
    if winners:
        winner = max(winners, key=lambda c: c.result.mean if direction == "max" else -c.result.mean)
        winner.new_best = True
    for c in out:
        records.save_confirmation(store, campaign=campaign.name, session_id=session_id, idea=c.idea,
                                search_run_id=c.search_run.id, run_id=c.run.id if c.run else None,
                                baseline_run_id=c.baseline.id if c.baseline else None, result=c.result,
                                new_best=c.new_best, reason=c.reason, template_hash=version, night=fresh.night,
                                train_seed=fresh.train_seed, draw=fresh.draw,
                                previous_run_id=c.previous.id if c.previous else None)
    return out


def _worth_confirming(store: Store, campaign: CampaignConfig, summary: SessionSummary, best: dict | None,
                      direction: str) -> list[IdeaOutcome]:
    """The night's ideas whose best run beat the campaign's best (else the baseline) in the search, best first,
    at most confirm_top, leaving out runs an earlier confirmation already re-evaluated."""
    bar = (store.get(best["search_run_id"]).metric_mean if best
           else summary.baseline.mean if summary.baseline else None)
    if bar is None:
        return []
    done = {c["search_run_id"] for c in records.confirmations(store, campaign.name)}
    picked = [i for i in summary.ideas if i.best is not None and i.best.run_id not in done
              and better(i.best.metric.mean, bar, direction)]
    picked.sort(key=lambda i: i.best.metric.mean, reverse=direction == "max")
    return picked[:campaign.confirm_top]


def _holm_family(scored: list[Confirmed], previous: Run | None, metric: str, direction: str, test: Test) -> None:
    """The night's verdicts, as one Holm family: every candidate against the baseline, and against the previous
    best's re-run where its mean beats it (elsewhere that test could not say "better" anyway)."""
    family: list[tuple[ConfirmationResult | PreviousBest, Comparison]] = [(c.result, c.comparison) for c in scored]
    if previous is not None:
        p = previous.result.summary(metric)
        for c in scored:
            prev = c.result.previous
            prev.run_id, prev.mean, prev.stderr, prev.ci95, prev.n = previous.id, p.mean, p.stderr, p.ci95, p.n
            # Not tested (its mean is not above the previous best's): no verdict, so never a new best.
            prev.verdict = prev.p_value_holm = None
            if better(c.result.mean, p.mean, direction):
                cmp = compare(c.run.result.summary(metric).values, p.values, direction, test=test)
                prev.test, prev.p_value, prev.difference = cmp.test, cmp.p_value, cmp.difference
                family.append((prev, cmp))
    holm_adjust([cmp for _, cmp in family], direction)
    for r, cmp in family:
        r.p_value_holm, r.verdict = cmp.p_value_holm, cmp.verdict_holm


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



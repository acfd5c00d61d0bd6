"""One night of a campaign, whole: what `scientist nightly` does between parsing its file and printing.

`run_night` holds the campaign's lock for the night, picks the night (a new one, or the one a killed
process left unfinished), runs its session and then its confirmations on fresh seeds, writes the
digest and the campaign's index, and runs the announcement hook. The CLI parses the campaign file,
resolves the template and the sandbox for this machine, calls it and prints what it returns; a
benchmark or another scheduler calls the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from base.events import NightStarted, Reporter
from base.records import SessionSummary
from base.store import Store
from base.template import Template
from sandbox.backends import Sandbox
from scientist.campaign import (
    CampaignConfig,
    Confirmed,
    Night,
    NightLock,
    best_known,
    campaign_dir,
    confirm_night,
    next_night,
    night_config,
)
from scientist.campaign_digest import Pages, announce, write_digest
from scientist.config import flag_error
from scientist.session import EXIT_BUDGET, EXIT_OK, CannotStart, check_can_start, run_session


@dataclass(frozen=True)
class NightResult:
    """What a night did: its exit code (a reached budget counts as a night done), its search, its confirmations,
    the pages written, and the announcement's problem in one line (None when it ran or there is none)."""

    code: int
    night: Night
    summary: SessionSummary
    confirmed: list[Confirmed]
    pages: Pages
    announce_problem: str | None


def run_night(campaign: CampaignConfig, template: Template, sandbox: Sandbox, home: Path,
              report: Reporter) -> NightResult:
    """Run one night of the campaign under its lock.

    Raises NightRunning when another night holds the lock, CannotStart when the settings cannot run
    here (before anything is computed), and CampaignError when the digest cannot be written.
    """
    store = Store(home / "store.sqlite")
    root = campaign_dir(home, campaign.name)
    lock = NightLock(root / "nightly.lock")
    lock.acquire()
    try:
        night = next_night(store, campaign.name, root)
        try:
            cfg = night_config(campaign, template, sandbox, home, night,
                               best=best_known(store, campaign.name, template.content_hash()))
        except ValidationError as e:
            raise CannotStart(flag_error(e).replace("--", "")) from None
        check_can_start(cfg, store)
        report.event(NightStarted(campaign=campaign.name, night=night.index, out_dir=str(night.out_dir),
                                  resumed=night.resumed))
        code, summary = run_session(cfg, store, report)
        confirmed: list[Confirmed] = []
        if summary.baseline is not None and code in (EXIT_OK, EXIT_BUDGET):
            session_id = store.session_at(cfg.out_dir)["id"]
            confirmed = confirm_night(cfg, campaign, store, session_id, summary, report)
        pages = write_digest(campaign, store, night, home)
        return NightResult(EXIT_OK if code == EXIT_BUDGET else code, night, summary, confirmed, pages,
                           announce(campaign, night, pages))
    finally:
        lock.release()

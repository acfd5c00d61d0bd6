"""Benchmark: how good is the search? Random sampling, the evolve proposer, and evolve with the cascade, at one budget.

Each (template, strategy, campaign seed) is one real night of a campaign (`scientist nightly`, bwrap, the sealed
evaluator) on a fresh home with a fixed evaluation budget (`[budget] evaluations`, a screen counted at its cost), so
the three strategies are measured as a lab would run them, confirmations included: after the search, the night
evaluates its best ideas again on fresh seeds against the baseline on the same seeds (one Holm family), and only
those are "confirmed". The strategies:

- random:          `proposer = "random"`, every candidate a fresh sample of the template's search space;
- evolve:          `proposer = "evolve"`, tournament, crossover, mutation and hill-climbing (docs/agent.md);
- evolve+cascade:  the same with `cascade = true` (each candidate screened first, base.cascade).

Per night: candidates tried (screened or evaluated), full evaluations, the budget used, the search's compute
(the runs' wall time less data preparation), confirmed improvements (better than the baseline on fresh seeds,
Holm), evaluations until the first confirmed improvement (the budget used up to and including the search run it
came from; screens at their cost), and the best confirmed result. The homes share compiled programs and prepared
data (keyed by their inputs, as in one home: sharing changes no result, only who compiles first), never results.

Known improvements (measured, named in BENCHMARKS.md): the grokking fixture's optimizer recipes with a learning
rate of 0.01 or more and weight decay of 1 or more generalise beyond the mirrored pairs in 400 steps (val_acc
0.72-0.79 against AdamW's 0.483); DiscoPOP's search space holds losses better than DPO (random_2 and random_6 of
bench/cascade.py, section 20).

The grokking fixture declares no [screen]: the benchmark's copy of it adds one (2 of 4 seeds, 100 of 400 steps).

Run:  SCIENTIST_SECRETS=shipped .venv/bin/python bench/search.py [--template grokking] [--seeds 3] [--budget 12]
      [--runs 3] [--strategies random,evolve,evolve+cascade] [--work DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("SCIENTIST_SECRETS", "shipped")  # the README's and BENCHMARKS' figures use the shipped values

from base.cascade import screen_cost, work_seconds  # noqa: E402
from base.store import Run, Store  # noqa: E402
from scientist.campaign_store import confirmations  # noqa: E402

STRATEGIES = {"random": {"proposer": "random"}, "evolve": {"proposer": "evolve"},
              "evolve+cascade": {"proposer": "evolve", "cascade": True}}
TEMPLATES = {"grokking": ROOT / "tests" / "fixtures" / "grokking"}  # others: templates/<name>
GROKKING_SCREEN = "screen.seeds = 2\nscreen.config = { steps = 100, checkpoints = 10 }\n"
CACHES = ("jax-eval", "jax-sandbox", "data")


@dataclass
class Night:
    """What one night of one strategy did and confirmed."""

    template: str
    strategy: str
    seed: int
    exit_code: int
    candidates: int            # candidates the search tried: screened, or evaluated fully without a screen
    full: int                  # full evaluations of candidates (the baseline's not counted)
    screened_out: int
    budget_used: float         # full evaluations + screens at their cost
    search_s: float            # compute of the search's runs (baseline and confirmations not counted)
    confirm_s: float
    confirmed: int             # confirmations better than the baseline on fresh seeds (Holm)
    first_confirmed_at: float | None   # budget used up to and including the search run of the first of them
    best_confirmed: float | None       # its mean on the fresh seeds, the best of the night's
    baseline_fresh: float | None       # the baseline's mean on the same fresh seeds
    wall_s: float
    budget: int = 0            # the night's [budget] evaluations (0: not recorded)


def work_s(run: Run) -> float:
    """A run's wall time without the data preparation (paid once per template version); 0 when unknown."""
    return work_seconds(run.timings) or 0.0


def template_copy(name: str, work: Path) -> Path:
    """The template the nights run: templates/<name>, or the grokking fixture with a [screen] added."""
    if name not in TEMPLATES:
        return ROOT / "templates" / name
    dest = work / "templates" / name
    if not dest.exists():
        shutil.copytree(TEMPLATES[name], dest, ignore=shutil.ignore_patterns("__pycache__"))
        toml = (dest / "template.toml").read_text()
        head, sep, rest = toml.partition("\n[")
        (dest / "template.toml").write_text(head + "\n" + GROKKING_SCREEN + sep + rest)
    return dest


def campaign_file(path: Path, template: Path, strategy: str, seed: int, budget: int, runs: int,
                  confirm_seeds: int) -> Path:
    """One night's campaign: the strategy's proposer, the seed, the budget; no paper, no review."""
    settings = {"name": f"search-{strategy.replace('+', '-')}-{seed}", "template": template.name,
                "templates_dir": str(template.parent), "seed": seed, "ideas": 10 * budget, "runs": runs,
                "sandbox": "bwrap", "writeup": False, "review": False, "confirm_seeds": confirm_seeds,
                "confirm_top": 3, **STRATEGIES[strategy]}
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + f"\n\n[budget]\nevaluations = {budget}\n")
    return path


def shared_home(home: Path, caches: Path) -> Path:
    """A fresh home whose compiled programs and prepared data are the benchmark's shared ones."""
    for name in CACHES:
        (caches / name).mkdir(parents=True, exist_ok=True)
        link = home / "cache" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(link):
            link.symlink_to(caches / name, target_is_directory=True)
    return home


def run_night(name: str, template: Path, strategy: str, seed: int, args: argparse.Namespace) -> Night:
    """One night through the real CLI on a fresh home, then read back from its store."""
    where = args.work / name / f"{strategy.replace('+', '-')}-{seed}"
    if where.exists():
        shutil.rmtree(where)
    home = shared_home(where / "home", args.work / "caches")
    camp = campaign_file(where.parent / f"{where.name}.toml", template, strategy, seed, args.budget, args.runs,
                         args.confirm_seeds)
    t0 = time.time()
    log = (where / "night.log").open("w")
    code = subprocess.run([sys.executable, "-m", "scientist", "nightly", str(camp), "--home", str(home)],
                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    wall = time.time() - t0
    store = Store(home / "store.sqlite")
    try:
        return replace(read_night(store, name, strategy, seed, code, wall), budget=args.budget)
    finally:
        store.close()


def read_night(store: Store, name: str, strategy: str, seed: int, code: int, wall: float) -> Night:
    """The night's search in the order it ran, its screens' cost and its confirmations."""
    camp = f"search-{strategy.replace('+', '-')}-{seed}"
    conf = confirmations(store, camp)
    confirm_ids = {c[k] for c in conf for k in ("run_id", "baseline_run_id") if c[k] is not None}
    runs = sorted((r for r in store.runs() if r.id not in confirm_ids), key=lambda r: r.id)
    base_full = next((r for r in runs if r.kind == "baseline"), None)
    base_screen = next((r for r in runs if r.kind == "screen"), None)  # the baseline's screen comes first
    cost = screen_cost(base_screen.timings, base_full.timings) if base_screen and base_full else 1.0
    search = [r for r in runs if r.kind in ("candidate", "screen") and r is not base_screen]
    used, at = 0.0, {}
    for r in search:
        used += cost if r.kind == "screen" else 1.0
        at[r.id] = used
    screened = {r.candidate_hash for r in search if r.kind == "screen"}
    full = [r for r in search if r.kind == "candidate"]
    better = [c for c in conf if c["result"] is not None and c["result"].verdict == "better"]
    first = min((at.get(c["search_run_id"], used) for c in better), default=None)
    best = max((c["result"].mean for c in better), default=None) if better else None
    base_fresh = next((c["result"].baseline_mean for c in conf if c["result"] is not None), None)
    confirm_runs = [r for r in (store.get(i) for i in confirm_ids) if r is not None]
    return Night(template=name, strategy=strategy, seed=seed, exit_code=code,
                 candidates=len(screened | {r.candidate_hash for r in full}), full=len(full),
                 screened_out=len(screened - {r.candidate_hash for r in full}), budget_used=round(used, 3),
                 search_s=round(sum(work_s(r) for r in search), 1), confirm_s=round(sum(map(work_s, confirm_runs)), 1),
                 confirmed=len(better), first_confirmed_at=first, best_confirmed=best, baseline_fresh=base_fresh,
                 wall_s=round(wall, 1))


def report(nights: list[Night]) -> None:
    """The per-night rows, then one row per (template, strategy) and the cascade's ratios."""
    print("| template | strategy | seed | exit | candidates | full | screened out | budget used | search s | "
          "confirmed | first confirmed at | best confirmed (baseline on the same seeds) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n in nights:
        best = f"{n.best_confirmed:.4f} ({n.baseline_fresh:.4f})" if n.best_confirmed is not None else "none"
        first = f"{n.first_confirmed_at:g}" if n.first_confirmed_at is not None else "-"
        print(f"| {n.template} | {n.strategy} | {n.seed} | {n.exit_code} | {n.candidates} | {n.full} | "
              f"{n.screened_out} | {n.budget_used:g} | {n.search_s:.0f} | {n.confirmed} | {first} | {best} |")
    budgets = ", ".join(f"{t} {'/'.join(str(b) for b in sorted({n.budget for n in nights if n.template == t}))}"
                        for t in dict.fromkeys(n.template for n in nights))
    print(f"\nPer strategy, over the seeds (evaluations a night: {budgets}):\n")
    print("| template | strategy | nights | nights with a confirmed improvement | evaluations to the first (median) "
          "| best confirmed (mean over nights with one) | candidates per search hour | confirmed per search hour |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rate: dict[tuple[str, str], tuple[float, float]] = {}
    for t in dict.fromkeys(n.template for n in nights):
        for s in STRATEGIES:
            ns = [n for n in nights if n.template == t and n.strategy == s]
            if not ns:
                continue
            hours = sum(n.search_s for n in ns) / 3600
            firsts = [n.first_confirmed_at for n in ns if n.first_confirmed_at is not None]
            bests = [n.best_confirmed for n in ns if n.best_confirmed is not None]
            per_h = (sum(n.candidates for n in ns) / hours, sum(n.confirmed for n in ns) / hours) if hours else (0, 0)
            rate[(t, s)] = per_h
            print(f"| {t} | {s} | {len(ns)} | {len(firsts)} | "
                  f"{statistics.median(firsts):g} | " if firsts else f"| {t} | {s} | {len(ns)} | 0 | - | ", end="")
            print(f"{statistics.mean(bests):.4f} | " if bests else "none | ", end="")
            print(f"{per_h[0]:.0f} | {per_h[1]:.1f} |")
    for t in dict.fromkeys(n.template for n in nights):
        if (t, "evolve") in rate and (t, "evolve+cascade") in rate:
            (c0, k0), (c1, k1) = rate[(t, "evolve")], rate[(t, "evolve+cascade")]
            print(f"\n{t}: cascade / no cascade: candidates per search hour {c1 / c0:.2f}x, confirmed improvements "
                  f"per search hour " + (f"{k1 / k0:.2f}x" if k0 else f"{k1:.1f} against 0"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", action="append", help="grokking (the fixture), discopop, ... (repeatable)")
    parser.add_argument("--seeds", type=int, default=3, help="campaign seeds per strategy")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=12, help="evaluations a night (a screen at its cost)")
    parser.add_argument("--runs", type=int, default=3, help="runs per idea (the campaign default)")
    parser.add_argument("--confirm-seeds", type=int, default=8)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/search_bench"))
    parser.add_argument("--json", type=Path, default=None, help="append every night here as a JSON line")
    parser.add_argument("--report", type=Path, default=None, help="only print the table of a --json file")
    args = parser.parse_args()
    if args.report:
        nights = [Night(**json.loads(line)) for line in args.report.read_text().splitlines() if line.strip()]
        report(nights)
        return
    args.work = args.work.resolve()
    strategies = [s for s in args.strategies.split(",") if s]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        sys.exit(f"unknown strategy {unknown[0]!r}: choose from {', '.join(STRATEGIES)}")
    nights = []
    for name in args.template or ["grokking"]:
        template = template_copy(name, args.work)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for strategy in strategies:
                n = run_night(name, template, strategy, seed, args)
                nights.append(n)
                print(f"{name} {strategy} seed {seed}: exit {n.exit_code}, {n.candidates} candidates, "
                      f"{n.confirmed} confirmed, first at {n.first_confirmed_at}, {n.wall_s:.0f} s",
                      file=sys.stderr, flush=True)
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(asdict(n)) + "\n")
    report(nights)


if __name__ == "__main__":
    main()

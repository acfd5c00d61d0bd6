"""Benchmark: the evaluation cascade's screen against the full evaluation (its false-negative rate and its cost).

Every candidate is evaluated twice through the real runner (sandboxed training, sealed evaluator): fully, at the
template's settings for this machine (its cpu profile), and screened, with the template's [screen] laid over them.
The candidates are the template's shipped candidates (candidates/*.py) and --random members of its search space
(templates/<name>/search_space.py, drawn with --seed). Then, for each candidate:

- the full verdict against the baseline's full run: Welch's t-test over seeds, alpha 0.05, unadjusted;
- the cascade's decision (base.cascade.decide): its screen against the bar's screen, two ways: against the
  baseline's screen (the bar a session starts with, and `scientist eval --cascade`'s), and as a session would
  meet the candidates in this order, the bar moving to the screen of each better full result (the shipped
  candidates first, then the random ones).

A false negative is a candidate the screen rejects though its full evaluation rates it better than the baseline
(strict) or better or not significantly different (lenient: "as good as the baseline" within what the seeds can
tell). The table and the summary lines below it say how many, and what the screens cost against full runs.

Run:  SCIENTIST_SECRETS=shipped .venv/bin/python bench/cascade.py [--template discopop] [--random 8] [--seed 0]
      [--home DIR] [--sandbox process|bwrap] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SCIENTIST_SECRETS", "shipped")  # the README's and BENCHMARKS' figures use the shipped values

from base.cascade import decide, rule, screen_cost, work_seconds  # noqa: E402
from base.stats import better, compare, format_p  # noqa: E402
from base.store import Run, Store  # noqa: E402
from base.template import load_template  # noqa: E402
from sandbox.backends import resolve  # noqa: E402
from scientist import runner  # noqa: E402
from scientist.proposers.evolve import load_search_space  # noqa: E402


def work_s(run: Run) -> float:
    """A run's wall time without the data preparation (paid once per template version); 0 when unknown."""
    return work_seconds(run.timings) or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--random", type=int, default=8, help="random members of the search space")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random members")
    parser.add_argument("--home", type=Path, default=None, help="a scientist home (default: a fresh temporary one)")
    parser.add_argument("--sandbox", default="process")
    parser.add_argument("--json", type=Path, default=None, help="write every row here too")
    args = parser.parse_args()

    template = load_template(args.template).for_hardware(None, None)
    home = (args.home or Path(tempfile.mkdtemp(prefix="cascade-bench-"))).resolve()
    store = Store(home / "store.sqlite")
    sandbox = resolve(args.sandbox)
    spec = template.spec
    metric, direction = spec.metric.name, spec.metric.direction

    candidates = [("baseline", template.editable_sources())]
    for path in sorted((template.root / "candidates").glob("*.py")):
        candidates.append((path.stem, template.read_candidate(path)))
    space = load_search_space(template)
    rng = random.Random(args.seed)
    for i in range(args.random):
        candidates.append((f"random_{i}", space.render(space.sample(rng))))

    rows = []
    t0 = time.time()
    for name, sources in candidates:
        req = runner.EvalRequest(template=template, sources=sources, seeds=spec.seeds, sandbox=sandbox, home=home,
                                 out_dir=home / "bench" / name, label=name)
        full = runner.evaluate(req, store).run
        screen = runner.evaluate(runner.screen_request(req), store).run
        rows.append({"name": name, "full": full, "screen": screen})
        print(f"[{time.time() - t0:6.0f} s] {name}: full {full.status} {work_s(full):.1f} s, "
              f"screen {screen.status} {work_s(screen):.1f} s", file=sys.stderr, flush=True)

    base = rows[0]
    if base["full"].status != "ok" or base["screen"].status != "ok":
        sys.exit(f"the baseline failed: {base['full'].reason or base['screen'].reason}")
    base_full = base["full"].result.summary(metric).values
    for r in rows[1:]:
        r["verdict"] = (compare(r["full"].result.summary(metric).values, base_full, direction).verdict
                        if r["full"].status == "ok" else "failed")
    margin = spec.screen.margin
    decided = {m: decisions(rows, metric, direction, m) for m in sorted({0.0, 0.02, margin, 0.1})}

    screen_n = runner.screen_request(req).seeds
    print(f"Rule: {rule(margin)}.\n")
    print(f"| candidate | full {metric} (n={spec.seeds}) | vs baseline | screen (n={screen_n}) "
          f"| screen vs baseline's, less {margin:.0%} | decision | in session order | full s | screen s |")
    print("|---|---:|---|---:|---:|---|---|---:|---:|")
    for i, r in enumerate(rows):
        full, screen = r["full"], r["screen"]
        f = full.result.summary(metric) if full.status == "ok" else None
        s = screen.result.summary(metric) if screen.status == "ok" else None
        cells = [r["name"], f"{f.mean:.4f} ± {f.stderr:.4f}" if f else f"failed: {(full.reason or '')[:40]}",
                 r.get("verdict", "(baseline)"), f"{s.mean:.4f} ± {s.stderr:.4f}" if s else "failed"]
        d, sess = decided[margin][i] if i else (None, None)
        cells += [format_p(d.p_value) if d else "", ("promoted" if d.promoted else "**screened out**") if d else
                  ("" if not i else "screen failed"),
                  (("promoted" if sess.promoted else "screened out") + f" (bar: {sess.bar})") if sess else "",
                  f"{work_s(full):.1f}", f"{work_s(screen):.1f}"]
        print("| " + " | ".join(cells) + " |")

    print("\n| margin | bar | false negatives: better | better or n.s. | screened out: worse | of all |")
    print("|---:|---|---:|---:|---:|---:|")
    scored = [i for i, r in enumerate(rows) if i and decided[margin][i][0] is not None]
    for m, ds in decided.items():
        for label, k in (("baseline's screen", 0), ("session order", 1)):
            kept = {i for i in scored if not ds[i][k].promoted}

            def out(names: tuple[str, ...], kept: set[int] = kept) -> list[str]:
                return [rows[i]["name"] for i in scored if rows[i]["verdict"] in names and i in kept]

            def count(names: tuple[str, ...]) -> int:
                return sum(rows[i]["verdict"] in names for i in scored)

            fn_b, fn_n, w = out(("better",)), out(("better", "no significant difference")), out(("worse", "failed"))
            print(f"| {m:.0%} | {label} | {len(fn_b)}/{count(('better',))} {', '.join(fn_b)} | "
                  f"{len(fn_n)}/{count(('better', 'no significant difference'))} {', '.join(fn_n)} | "
                  f"{len(w)}/{count(('worse', 'failed'))} | {len(kept)}/{len(scored)} |")

    full_s = sum(work_s(r["full"]) for r in rows[1:])
    cascade_s = sum(work_s(r["screen"]) + (work_s(r["full"]) if d[0] is not None and d[0].promoted else 0.0)
                    for r, d in zip(rows[1:], decided[margin][1:], strict=True))
    ratios = [work_s(r["screen"]) / work_s(r["full"]) for r in rows[1:]
              if r["full"].status == "ok" and r["screen"].status == "ok" and work_s(r["full"]) > 0]
    print(f"\nscreen cost as the budget counts it (baseline's screen / full): "
          f"{screen_cost(base['screen'].timings, base['full'].timings):g}; per candidate: mean "
          f"{sum(ratios) / max(len(ratios), 1):.2f}, range {min(ratios, default=0):.2f}-{max(ratios, default=0):.2f}")
    print(f"compute of the {len(rows) - 1} candidates: {full_s:.0f} s all fully evaluated, {cascade_s:.0f} s with the "
          f"cascade against the baseline's screen ({cascade_s / max(full_s, 1e-9):.0%}); wall {time.time() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([{
            "name": r["name"], "verdict": r.get("verdict"), "full_values": r["full"].final_info and
            r["full"].result.summary(metric).values, "screen_values": r["screen"].final_info and
            r["screen"].result.summary(metric).values, "full_s": work_s(r["full"]), "screen_s": work_s(r["screen"])}
            for r in rows], indent=1))


def decisions(rows: list[dict], metric: str, direction: str, margin: float) -> list[tuple]:
    """Per row (None for the baseline's): its decision against the baseline's screen, and in session order (the bar
    moving to the screen of each better full result, as scientist.experiment.Cascade moves it)."""
    base_screen = rows[0]["screen"].result.summary(metric).values
    bar_name, bar_values = "baseline", base_screen
    bar_full = rows[0]["full"].result.summary(metric).mean
    out: list[tuple] = [(None, None)]
    for r in rows[1:]:
        if r["screen"].status != "ok":
            out.append((None, None))
            continue
        values = r["screen"].result.summary(metric).values
        session = decide(values, bar_values, direction, bar_name, margin)
        out.append((decide(values, base_screen, direction, "baseline", margin), session))
        if session.promoted and r["full"].status == "ok":
            mean = r["full"].result.summary(metric).mean
            if better(mean, bar_full, direction):
                bar_name, bar_values, bar_full = r["name"], values, mean
    return out


if __name__ == "__main__":
    main()

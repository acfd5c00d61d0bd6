"""Benchmark: evaluations the evolve proposer would spend on copies of a genome under the template's symmetries.

A search space may name its template's symmetries (SearchSpace.canonical: for DiscoPOP a rescaled beta
and a positive factor on the whole loss). The proposer then evaluates one genome per canonical form. This
replays the proposer offline (no training: each idea's metric is drawn at random, seeded) for --ideas
ideas of --runs runs each, over --seeds campaign seeds, twice: with the symmetries known, and with them
ignored (canonical as the identity), and counts the proposals whose canonical form had been evaluated
already, the baseline included. Those are the evaluations the symmetries save.

Run:  .venv/bin/python bench/symmetries.py [--template discopop] [--ideas 50] [--runs 3] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from base.records import ArchiveEntry  # noqa: E402
from base.template import load_template  # noqa: E402
from scientist.proposers import IdeaContext  # noqa: E402
from scientist.proposers.evolve import EvolveProposer, load_search_space  # noqa: E402


def search(template: str, seed: int, ideas: int, runs: int, symmetries: bool) -> tuple[int, int]:
    """(proposals, copies): how many genomes the proposer sent to evaluation, and how many repeated a form."""
    space = load_search_space(load_template(template))
    key = lambda g: json.dumps(space.canonical(g), sort_keys=True)  # noqa: E731 - the true forms, for counting
    proposing = space if symmetries else SimpleNamespace(**{**vars(space), "canonical": lambda g: g})
    proposer = EvolveProposer(proposing, "max", seed=seed, baseline_metric=1.0)
    rng = random.Random(f"metric:{seed}")
    seen = {key(space.known()[space.BASELINE])}
    archive: list[ArchiveEntry] = []
    proposals = copies = 0
    for idx in range(ideas):
        idea = proposer.next_idea(idx, archive)
        history: list[SimpleNamespace] = []
        for run in range(1, runs + 1):
            ctx = IdeaContext(idx=idx, idea=idea, run_idx=run, runs=runs, attempt=1, attempts=1, files={},
                              history=history, baseline="", direction="max")
            genome = proposer.propose(ctx).meta["genome"]
            proposals += 1
            copies += key(genome) in seen
            seen.add(key(genome))
            history.append(SimpleNamespace(status="ok", metric=rng.gauss(1.0, 0.05), meta={"genome": genome}))
        archive.append(ArchiveEntry(idea=idea, metric=max(a.metric for a in history)))
    return proposals, copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", default="discopop")
    parser.add_argument("--ideas", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print("| symmetries | evaluations | of them copies | share |")
    print("|---|---:|---:|---:|")
    for symmetries in (False, True):
        total = [search(args.template, s, args.ideas, args.runs, symmetries) for s in range(args.seeds)]
        n, c = sum(t[0] for t in total), sum(t[1] for t in total)
        print(f"| {'known' if symmetries else 'ignored'} | {n} | {c} | {c / n:.1%} |")


if __name__ == "__main__":
    main()

"""The LLM-free proposer: evolution over the template's search space.

Ideas are genomes: a tournament over the archive (every earlier idea of the
template with its best sealed metric, and the baseline) picks parents, which are
crossed over and mutated; a random sample now and then keeps diversity. Within
an idea, each later run hill-climbs from the idea's best genome so far. Every
random choice is seeded from (seed, idea, run, attempt), so a resumed session
proposes exactly what the killed one did.

With `sample_only` (`--proposer random`) every idea and every run is a fresh sample of the space:
the control a search is measured against (bench/search.py).
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

from base.records import ArchiveEntry, Idea
from base.search_space import OPTIONAL_FUNCTIONS, SearchSpace, SearchSpaceError, check_search_space
from base.stats import better
from base.template import Template
from scientist.proposers import IdeaContext, Proposal

EXPLORE = 0.2
CROSSOVER = 0.3
TOURNAMENT = 3


def _shown(path: Path) -> str:
    """The path as the user would type it: relative to the current folder when it is under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_search_space(template: Template) -> SearchSpace:
    """The template's search_space.py, loaded by path (templates are not packages) and checked.

    Raises SearchSpaceError, one line naming the file and what is missing or wrong in it
    (base.search_space.check_search_space).
    """
    path = template.root / "search_space.py"
    if not path.is_file():
        raise SearchSpaceError(f"template {template.name} has no search_space.py, which --proposer evolve needs")
    where = _shown(path)
    spec = importlib.util.spec_from_file_location(f"search_space_{template.name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the template's code: a syntax error or a failed import is one line for the user
        raise SearchSpaceError(f"{where}: cannot be loaded: {type(e).__name__}: {' '.join(str(e).split())}") from e
    return check_search_space(module, where, editable=template.spec.editable)


class EvolveProposer:
    """Samples and mutates candidates from a search space; no model involved."""

    name = "evolve"
    may_repeat = False  # a genome already tried is never proposed again, so no idea needs a similarity check

    def __init__(self, space: SearchSpace, direction: str, seed: int = 0, baseline_metric: float | None = None,
                 sample_only: bool = False):
        self.space = space
        self.sample_only = sample_only
        self.name = "random" if sample_only else "evolve"
        self.direction = direction
        self.seed = seed
        # The search space names which known member is the template's shipped baseline, if any.
        name = space.BASELINE
        self.baseline = (space.known()[name], baseline_metric) if name is not None else None

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed, *parts)))

    def _key(self, genome: object) -> str:
        """Genomes the template's metric scores alike (its symmetries, SearchSpace.canonical) share a key."""
        canonical = getattr(self.space, "canonical", OPTIONAL_FUNCTIONS["canonical"])  # a space not checked on load
        return json.dumps(canonical(genome), sort_keys=True)

    def _tournament(self, pool: list[tuple[object, float]], rng: random.Random):
        picks = rng.sample(pool, min(TOURNAMENT, len(pool)))
        best = picks[0]
        for p in picks[1:]:
            if better(p[1], best[1], self.direction):
                best = p
        return best[0]

    def next_idea(self, idx: int, previous: list[ArchiveEntry]) -> Idea:
        """A new genome from the archive's best, or a fresh sample; never one already tried."""
        rng = self._rng("idea", idx)
        pool = [(p.idea.genome, p.metric) for p in previous if p.metric is not None and p.idea.genome is not None]
        if self.baseline is not None and self.baseline[1] is not None:
            pool.append(self.baseline)
        tried = {self._key(p.idea.genome) for p in previous if p.idea.genome is not None}
        if self.baseline is not None:  # the baseline is known already: an idea must differ from it too
            tried.add(self._key(self.baseline[0]))
        for _ in range(50):
            if not pool or self.sample_only or rng.random() < EXPLORE:
                genome, origin = self.space.sample(rng), "random sample"
            else:
                genome, origin = self._tournament(pool, rng), "mutation of a tournament winner"
                if len(pool) > 1 and rng.random() < CROSSOVER:
                    genome = self.space.crossover(genome, self._tournament(pool, rng), rng)
                    origin = "crossover and mutation of tournament winners"
                genome = self.space.mutate(genome, rng)
            if self._key(genome) not in tried:
                break
        formula = self.space.describe(genome)
        # The search space names what it evolves and what "better" means for its template.
        noun, goal = self.space.NOUN, self.space.GOAL
        # Worded as the question a run answers: papers quote it before any result is in.
        than = "the baseline" if origin == "random sample" else "its parents"
        experiment = (f"Evaluate the {noun}, then other random samples of the search space." if self.sample_only else
                      f"Evaluate the {noun}, then hill-climb from the best version with small mutations.")
        return Idea(name=f"{self.name}_{idx:03d}", title=f"{'Sampled' if self.sample_only else 'Evolved'} {noun}: "
                                                        f"{formula}",
                    hypothesis=f"We test whether the {noun} {formula} ({origin}) {goal} than {than}.",
                    experiment=experiment, genome=genome)

    def propose(self, ctx: IdeaContext) -> Proposal:
        """Run 1 evaluates the idea's genome; later runs and retries mutate the best genome so far (with
        sample_only: draw fresh samples)."""
        ok = [a for a in ctx.history if a.status == "ok" and "genome" in a.meta]
        if ctx.run_idx == 1 and ctx.attempt == 1:
            genome = ctx.idea.genome
        else:
            parent = ctx.idea.genome
            best = None
            for a in ok:
                if best is None or better(a.metric, best.metric, self.direction):
                    best = a
            if best is not None:
                parent = best.meta["genome"]
            # Never a copy (up to the template's symmetries) of what this idea or the baseline already ran.
            seen = {self._key(g) for g in [ctx.idea.genome, *(a.meta.get("genome") for a in ctx.history)]
                    if g is not None}
            if self.baseline is not None:
                seen.add(self._key(self.baseline[0]))
            for retry in range(50):
                extra = (retry,) if retry else ()  # the first draw is the one earlier versions made
                rng = self._rng("run", ctx.idx, ctx.run_idx, ctx.attempt, *extra)
                genome = self.space.sample(rng) if self.sample_only else self.space.mutate(parent, rng)
                if self._key(genome) not in seen:
                    break
        return Proposal(sources=self.space.render(genome), note=f"evaluate {self.space.describe(genome)}",
                        meta={"genome": genome})

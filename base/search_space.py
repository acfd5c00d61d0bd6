"""The interface of a template's search_space.py, its check on load, and the genome helpers templates share.

`--proposer evolve` (scientist/proposers/evolve.py) evolves genomes: plain JSON values (dicts with
string keys, lists, strings, numbers, booleans, None) that a template's search_space.py samples,
mutates, crosses over, describes in one line and renders into the template's editable files.
`SearchSpace` names what such a module provides; `check_search_space` checks a loaded module
against it, with one-line errors. The helpers below are the pieces every search space needs:
numbers rounded to three significant digits (short genomes, short code, exact JSON round trips),
draws and perturbations within a range, choices among options, and a mutation that is retried
until it changes something. Each helper makes a fixed, documented sequence of rng calls, so a
search space built from them proposes the same genomes for the same seed, run after run.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

Genome = Any  # plain JSON: dict (string keys), list, str, int, float, bool, None, nested
T = TypeVar("T")

# The optional constants and what the proposer assumes when a search space leaves them out.
DEFAULTS: dict[str, str | None] = {
    "BASELINE": None,
    "NOUN": "candidate",
    "GOAL": "scores better on the template's metric",
}
# The optional functions, and what the proposer uses when a search space leaves them out.
OPTIONAL_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"canonical": lambda genome: genome}
# The functions, with the parameters the proposer passes (positionally).
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "sample": ("rng",),
    "mutate": ("genome", "rng"),
    "crossover": ("a", "b", "rng"),
    "describe": ("genome",),
    "render": ("genome",),
    "known": (),
    "canonical": ("genome",),
}
MUTATE_TRIES = 50  # mutate_until_changed gives up after this many mutations that change nothing


class SearchSpace(Protocol):
    """What a template's search_space.py provides to `--proposer evolve` (a module satisfies it as it is).

    Every function is deterministic given its rng (a `random.Random` the proposer seeds) and never
    modifies the genomes it is given.
    """

    BASELINE: str | None  # the member of known() that is the shipped editable file(s), or None
    NOUN: str  # what an idea's title calls a genome: "loss", "recipe", "update rule"
    GOAL: str  # what better means, for an idea's hypothesis: "trades reward against KL better"

    def sample(self, rng: random.Random) -> Genome:
        """A random member of the space."""
        ...

    def mutate(self, genome: Genome, rng: random.Random) -> Genome:
        """A small random change of `genome` (a new genome; different from it whenever the space allows)."""
        ...

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> Genome:
        """A child of two parents, e.g. each field from either one."""
        ...

    def describe(self, genome: Genome) -> str:
        """One line for ideas, logs and papers, e.g. "-logsigmoid(z)"."""
        ...

    def render(self, genome: Genome) -> dict[str, str]:
        """The template's editable file(s) for `genome`: {relative path: source}."""
        ...

    def known(self) -> dict[str, Genome]:
        """Named members: the baseline, the files in candidates/ (same names), published variants."""
        ...

    def canonical(self, genome: Genome) -> Genome:
        """Optional: one representative of the genomes the template's metric scores alike (its symmetries:
        a rescaled beta, a positive factor on the whole loss under Adam, ...). The proposer evaluates one
        genome per canonical form and never spends runs on its copies. Left out: every genome is its own."""
        ...


class SearchSpaceError(Exception):
    """A search space `--proposer evolve` cannot use; the message is one line naming the file and the piece."""


# ---------------------------------------------------------------- the check on load


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def is_plain_json(value: Any) -> bool:
    """Whether `value` survives a JSON round trip unchanged (no tuple, set, NaN, non-string key, object)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        return False


def check_search_space(space: Any, where: str, editable: Sequence[str] | None = None) -> SearchSpace:
    """`space` if it provides the SearchSpace interface, with the missing optional constants set to DEFAULTS.

    Checks that every function exists and takes its arguments, the constants' types, that known()
    returns plain-JSON genomes and holds BASELINE, and calls each function once on a fixed seed:
    the genomes it makes must be plain JSON, its parents unmodified, describe one line, render
    a {path: source} dict (of `editable` files only, when given). Raises SearchSpaceError with
    one line that starts with `where` (the file, for the user) otherwise.
    """

    def fail(reason: str) -> SearchSpaceError:
        return SearchSpaceError(f"{where}: {reason}")

    for name, default in OPTIONAL_FUNCTIONS.items():
        if not hasattr(space, name):
            setattr(space, name, default)
    for name, params in FUNCTIONS.items():
        f = getattr(space, name, None)
        if not callable(f):
            raise fail(f"no function {name}({', '.join(params)}), which --proposer evolve needs")
        try:
            signature = inspect.signature(f)
        except (TypeError, ValueError):  # a builtin or C function: nothing to check
            continue
        try:
            signature.bind(*params)
        except TypeError:
            raise fail(f"{name} must take ({', '.join(params)}), not {name}{signature}") from None
    for name, default in DEFAULTS.items():
        if not hasattr(space, name):
            setattr(space, name, default)  # so the proposer reads one interface, whatever the module left out
    for name in ("NOUN", "GOAL"):
        value = getattr(space, name)
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise fail(f"{name} must be a non-empty one-line string, not {value!r}")

    def call(what: str, f: Callable, *args: Any) -> Any:
        try:
            return f(*args)
        except Exception as e:  # the template's code: any fault is one line naming the function
            raise fail(f"{what} failed: {_one_line(e)}") from e

    members = call("known()", space.known)
    if not isinstance(members, dict) or not members or not all(isinstance(k, str) for k in members):
        raise fail(f"known() must return a non-empty dict of name -> genome, not {type(members).__name__}")
    for name, genome in members.items():
        if not is_plain_json(genome):
            raise fail(f"known() member {name!r} is not plain JSON (a tuple, a set, a NaN, a non-string key?)")
    baseline = space.BASELINE
    if baseline is not None and (not isinstance(baseline, str) or baseline not in members):
        raise fail(f"BASELINE must be None or the name of a member of known() ({', '.join(members)}), "
                   f"not {baseline!r}")

    parent = members[baseline] if baseline is not None else next(iter(members.values()))
    before = copy.deepcopy(parent)
    rng = random.Random(0)
    genomes = {"known() member": parent}
    genomes["sample(rng)"] = call("sample(rng)", space.sample, rng)
    genomes["mutate(genome, rng)"] = call("mutate(genome, rng)", space.mutate, parent, rng)
    genomes["crossover(a, b, rng)"] = call("crossover(a, b, rng)", space.crossover, parent, genomes["sample(rng)"], rng)
    if parent != before:
        raise fail("mutate or crossover modified its parent genome; they must return new genomes")
    for what, genome in genomes.items():
        if not is_plain_json(genome):
            raise fail(f"{what} returned a genome that is not plain JSON: {str(genome)[:100]}")
        if not is_plain_json(call("canonical(genome)", space.canonical, genome)):
            raise fail(f"canonical(genome) of the {what} is not plain JSON")
        line = call("describe(genome)", space.describe, genome)
        if not isinstance(line, str) or not line.strip() or "\n" in line:
            raise fail(f"describe(genome) must return one line of text, not {str(line)[:100]!r}")
        files = call("render(genome)", space.render, genome)
        if (not isinstance(files, dict) or not files
                or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
            raise fail(f"render(genome) must return a non-empty dict of path -> source, not {type(files).__name__}")
        if editable is not None and set(files) - set(editable):
            raise fail(f"render(genome) wrote {', '.join(sorted(set(files) - set(editable)))}, which is not among "
                       f"the template's editable files ({', '.join(editable)})")
    return space


# ---------------------------------------------------------------- numbers


def round_sig(x: float, digits: int = 3) -> float:
    """x rounded to `digits` significant digits; zero is 0.0, never -0.0 (which JSON would write as "-0.0")."""
    return 0.0 if x == 0 else float(f"{x:.{digits}g}")


def clip(x: float, lo: float, hi: float, digits: int = 3) -> float:
    """x clipped into [lo, hi], then rounded.

    Rounding is monotone, so the result stays in [lo, hi] whenever the bounds themselves have at most
    `digits` significant digits (and rounding first, then clipping, gives the same number).
    """
    return round_sig(min(max(x, lo), hi), digits)


def uniform(rng: random.Random, lo: float, hi: float, log: bool = False, digits: int = 3) -> float:
    """A number drawn uniformly from [lo, hi] (log: uniformly in log space; lo > 0), rounded.

    One call of rng.uniform.
    """
    x = math.exp(rng.uniform(math.log(lo), math.log(hi))) if log else rng.uniform(lo, hi)
    return clip(x, lo, hi, digits)


def perturb(x: float, rng: random.Random, lo: float, hi: float, sigma: float, log: bool = False,
            digits: int = 3) -> float:
    """x moved by Gaussian noise, x * exp(N(0, sigma)) when log else x + N(0, sigma), clipped and rounded.

    One call of rng.gauss. At a bound the result may equal x; mutate_until_changed draws again then.
    """
    y = x * math.exp(rng.gauss(0.0, sigma)) if log else x + rng.gauss(0.0, sigma)
    return clip(y, lo, hi, digits)


def check_number(x: Any, lo: float, hi: float, name: str) -> None:
    """Raise ValueError unless x is a number (not a bool) in [lo, hi]; NaN is not."""
    if not isinstance(x, int | float) or isinstance(x, bool) or not lo <= x <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {x!r}")


@dataclass(frozen=True)
class Range:
    """The range of a number in a genome, and how it is drawn and perturbed.

    log: positive and scale-like (a learning rate, a weight): drawn log-uniformly and perturbed
    multiplicatively, x * exp(N(0, sigma)); otherwise drawn uniformly and perturbed additively,
    x + N(0, sigma).
    """

    lo: float
    hi: float
    sigma: float
    log: bool = False

    def draw(self, rng: random.Random) -> float:
        """A random value, rounded to three significant digits (one rng.uniform call)."""
        return uniform(rng, self.lo, self.hi, self.log)

    def perturb(self, x: float, rng: random.Random) -> float:
        """x moved a little, clipped into the range and rounded (one rng.gauss call)."""
        return perturb(x, rng, self.lo, self.hi, self.sigma, self.log)

    def check(self, x: Any, name: str) -> None:
        """Raise ValueError unless x is a number in the range."""
        check_number(x, self.lo, self.hi, name)


# ---------------------------------------------------------------- choices and mutation


def choose_other(options: Sequence[T], current: T, rng: random.Random) -> T:
    """One of `options` other than `current`, uniformly (one rng.choice call)."""
    return rng.choice([o for o in options if o != current])


def neighbour(options: Sequence[T], current: T, rng: random.Random, bounce: bool = False) -> T:
    """The option one step below or above `current` in an ordered sequence, at random (one rng.choice call).

    At either end a step off the sequence keeps `current`, or with bounce goes the other way instead.
    """
    i = options.index(current)
    j = min(max(i + rng.choice((-1, 1)), 0), len(options) - 1)
    if bounce and j == i:
        j = i - 1 if i else 1
    return options[j]


def weighted_choice(rng: random.Random, weighted: Sequence[tuple[T, float]]) -> T:
    """One item of (item, weight) pairs, with probability proportional to its weight (one rng.choices call)."""
    items, weights = zip(*weighted, strict=True)
    return rng.choices(items, weights=weights)[0]


def mutate_until_changed(step: Callable[[Genome, random.Random], Genome | None], genome: Genome,
                         rng: random.Random, tries: int = MUTATE_TRIES) -> Genome:
    """step(genome, rng) until it returns a genome other than `genome` (None counts as no change).

    A mutation that changes nothing (a number already at its bound, an operator with nothing to
    act on) would spend a run on a genome already evaluated. After `tries` such steps a copy of
    `genome` is returned. `step` must not modify `genome`.
    """
    for _ in range(tries):
        child = step(genome, rng)
        if child is not None and child != genome:
            return child
    return copy.deepcopy(genome)

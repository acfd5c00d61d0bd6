"""Search spaces: the DiscoPOP space (known members are the candidate losses, random members are safe losses),
the declared interface every template's search_space.py is checked against, and the shared genome helpers."""

import copy
import importlib.util
import inspect
import json
import random
import shutil
from types import ModuleType, SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DISCOPOP, ROOT

from base import search_space as bss
from base.search_space import SearchSpaceError, check_search_space
from base.template import load_template
from scientist.proposers.evolve import EvolveProposer, load_search_space

BETAS = [0.01, 0.1, 1.0, 5.0]
N_RANDOM = 200


def load_module(path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ss = load_module(DISCOPOP / "search_space.py", "discopop_search_space")


def loss_from_source(source: str):
    """Compile a rendered loss.py the way a candidate file is loaded, and return its `loss`."""
    namespace: dict = {}
    exec(compile(source, "loss.py", "exec"), namespace)
    return namespace["loss"]


def random_logps(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(-1.0 - 3.0 * rng.random(n)).astype(np.float32) for _ in range(4)]


def wide_margin_batch() -> tuple[list[jnp.ndarray], jnp.ndarray]:
    """Log-probs whose margins rho span [-200, 200] nats, each margin at every beta in BETAS.

    The rendered losses are elementwise, so one call with a per-example beta covers all betas at once.
    """
    rho = np.repeat(np.linspace(-200.0, 200.0, 41), len(BETAS))
    beta = np.tile(BETAS, 41)
    pc, pr, rc, rr = random_logps(rho.size, seed=1)
    pc = pc + (rho - ((pc - pr) - (rc - rr)))  # shift the chosen log-prob so the margin is exactly rho
    return [jnp.asarray(x, jnp.float32) for x in (pc, pr, rc, rr)], jnp.asarray(beta, jnp.float32)


def random_genomes() -> list:
    """A fixed-seed pool grown by sample, mutate and crossover in turn, so all three are exercised."""
    rng = random.Random(20240607)
    pool = list(ss.known().values())
    out = []
    for i in range(N_RANDOM):
        if i % 3 == 0:
            g = ss.sample(rng)
        elif i % 3 == 1:
            g = ss.mutate(rng.choice(pool), rng)
        else:
            g = ss.crossover(rng.choice(pool), rng.choice(pool), rng)
        pool.append(g)
        out.append(g)
    return out


GENOMES = random_genomes()


@pytest.mark.parametrize("name", ["dpo", "ipo", "slic", "lrml"])
def test_known_members_match_candidates(name):
    candidate = load_module(DISCOPOP / "candidates" / f"{name}.py", f"candidate_{name}").loss
    rendered = loss_from_source(ss.render(ss.known()[name])["loss.py"])
    logps = random_logps(64, seed=0)
    (wide, _) = wide_margin_batch()
    for beta in BETAS:
        for batch in (logps, wide):
            expected = np.asarray(candidate(*batch, jnp.float32(beta)))
            got = np.asarray(rendered(*batch, jnp.float32(beta)))
            assert np.allclose(got, expected, rtol=1e-6, atol=0.0), (name, beta)


def test_known_members_are_valid_and_distinct():
    members = ss.known()
    assert {"dpo", "ipo", "slic", "lrml"} <= set(members)
    for g in members.values():
        ss.validate(g)
    assert len({json.dumps(g, sort_keys=True) for g in members.values()}) == len(members)
    assert ss.describe(members["dpo"]) == "-logsigmoid(z)"
    assert ss.describe(members["ipo"]) == "(rho - 0.5/beta)^2"


def test_random_members_render_to_safe_losses():
    (pc, pr, rc, rr), beta = wide_margin_batch()
    for g in GENOMES:
        ss.validate(g)
        source = ss.render(g)["loss.py"]
        loss = loss_from_source(source)
        inspect.signature(loss).bind(*range(5))
        out = loss(pc, pr, rc, rr, beta)
        scalar_beta = loss(pc, pr, rc, rr, jnp.float32(0.1))
        grad = jax.grad(lambda x, loss=loss: jnp.sum(loss(x, pr, rc, rr, beta)))(pc)
        label = ss.describe(g)
        assert out.shape == scalar_beta.shape == pc.shape, label
        assert jnp.issubdtype(out.dtype, jnp.floating), label
        assert bool(jnp.all(jnp.isfinite(out)) & jnp.all(jnp.isfinite(scalar_beta))), label
        assert bool(jnp.all(jnp.isfinite(grad))), label


def test_genomes_are_plain_json_and_describe_is_one_line():
    for g in [*ss.known().values(), *GENOMES]:
        assert json.loads(json.dumps(g)) == g  # a tuple anywhere would come back as a list and differ
        assert ss.height(g) <= ss.MAX_DEPTH
        line = ss.describe(g)
        assert line and "\n" not in line and line == line.strip()


def test_mutate_changes_the_genome_deterministically():
    changed = 0
    for i, g in enumerate(GENOMES):
        before = copy.deepcopy(g)
        a = ss.mutate(g, random.Random(i))
        assert a == ss.mutate(g, random.Random(i))
        assert g == before  # the parent is not modified
        ss.validate(a)
        changed += a != g
    assert changed >= 0.95 * len(GENOMES)


def test_sample_and_crossover_are_deterministic():
    assert [ss.sample(random.Random(3)) for _ in range(2)] == [ss.sample(random.Random(3))] * 2
    a, b = GENOMES[0], GENOMES[1]
    assert ss.crossover(a, b, random.Random(5)) == ss.crossover(a, b, random.Random(5))
    assert a == GENOMES[0] and b == GENOMES[1]


def test_rendered_members_pass_the_harness_gate():
    harness = load_module(DISCOPOP / "harness.py", "discopop_harness")
    for g in [*ss.known().values(), *GENOMES[:6]]:
        harness.gate(loss_from_source(ss.render(g)["loss.py"]), 8)  # exits the process on failure


def test_evolved_ideas_never_repeat_the_baseline():
    """A mutation that lands back on the shipped baseline would be an idea that is the baseline itself."""
    baseline = {"lr": 1}
    space = SimpleNamespace(BASELINE="base", NOUN="rate", GOAL="is better", known=lambda: {"base": baseline},
                            describe=str, render=lambda g: {"f.py": str(g)},
                            sample=lambda rng: {"lr": rng.choice([1, 2])},
                            mutate=lambda g, rng: {"lr": rng.choice([1, 2])},
                            crossover=lambda a, b, rng: a)
    check_search_space(space, "test")
    for seed in range(20):
        idea = EvolveProposer(space, "max", seed=seed, baseline_metric=0.5).next_idea(0, [])
        assert idea.genome != baseline


def test_random_proposer_only_samples_where_evolve_would_climb():
    """`--proposer random`: with a strong archive, every idea and every later run is a fresh sample (the control a
    search is measured against), never a mutation of a parent; evolve from the same archive mutates."""
    from base.records import ArchiveEntry, Idea
    from scientist.proposers import IdeaContext

    space = SimpleNamespace(BASELINE="base", NOUN="rate", GOAL="is better", known=lambda: {"base": {"lr": 0}},
                            describe=str, render=lambda g: {"f.py": str(g)},
                            sample=lambda rng: {"lr": rng.randrange(1, 1000)},   # samples: 1..999
                            mutate=lambda g, rng: {"lr": g["lr"] + 1000},        # mutations: 1000 and up
                            crossover=lambda a, b, rng: a)
    check_search_space(space, "test")
    archive = [ArchiveEntry(idea=Idea(name="old", title="t", hypothesis="h", experiment="e", genome={"lr": 5}),
                            metric=0.9)]
    sampled = [EvolveProposer(space, "max", seed=s, baseline_metric=0.5, sample_only=True).next_idea(1, archive)
               for s in range(30)]
    assert all(i.genome["lr"] < 1000 and i.name.startswith("random_") and i.title.startswith("Sampled rate")
               for i in sampled)
    evolved = [EvolveProposer(space, "max", seed=s, baseline_metric=0.5).next_idea(1, archive) for s in range(30)]
    assert sum(i.genome["lr"] >= 1000 for i in evolved) >= 15  # most are mutations of a tournament winner
    idea = sampled[0]
    for proposer, climbs in ((EvolveProposer(space, "max", sample_only=True), False), (EvolveProposer(space, "max"),
                                                                                          True)):
        later = proposer.propose(IdeaContext(idx=1, idea=idea, run_idx=2, runs=3, attempt=1, attempts=4, files={},
                                             history=[], baseline="", direction="max"))
        assert (later.meta["genome"]["lr"] >= 1000) is climbs


# ---------------------------------------------------------------- the declared interface

TEMPLATES = ("discopop", "diffusion", "kinetix", "open", "transformer", "navix", "hades", "synthenv")


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_provides_the_interface(name):
    """Each shipped search space passes the check on load and names its baseline, noun and goal itself."""
    raw = load_module(ROOT / "templates" / name / "search_space.py", f"raw_{name}")
    assert all(isinstance(getattr(raw, k, None), str) for k in ("BASELINE", "NOUN", "GOAL")), name
    space = load_search_space(load_template(name))
    assert space.BASELINE in space.known()
    idea = EvolveProposer(space, "max", seed=0, baseline_metric=0.0).next_idea(0, [])
    assert idea.title.startswith(f"Evolved {raw.NOUN}: ") and raw.GOAL in idea.hypothesis


def test_the_fixture_template_written_from_the_docs_provides_the_interface():
    space = load_search_space(load_template(str(ROOT / "tests" / "fixtures" / "grokking")))
    assert space.NOUN == "optimizer recipe"


GOOD = r"""
import random
BASELINE = "a"
NOUN = "rule"
GOAL = "is better"
def known():
    return {"a": {"x": 1.0}, "b": {"x": 2.0}}
def sample(rng):
    return {"x": rng.choice([1.0, 2.0, 3.0])}
def mutate(genome, rng):
    return {"x": genome["x"] + 1.0}
def crossover(a, b, rng):
    return dict(a)
def describe(genome):
    return f"x = {genome['x']:g}"
def render(genome):
    return {"rule.py": f"X = {genome['x']!r}\n"}
"""


def module_from(source: str) -> ModuleType:
    module = ModuleType("search_space_under_test")
    exec(compile(source, "search_space.py", "exec"), module.__dict__)
    return module


WHERE = "templates/x/search_space.py"
BROKEN = {
    "no mutate": (GOOD.replace("def mutate(", "def mutate_("),
                  f"{WHERE}: no function mutate(genome, rng), which --proposer evolve needs"),
    "mutate without rng": (GOOD.replace("def mutate(genome, rng):", "def mutate(genome):"),
                           f"{WHERE}: mutate must take (genome, rng), not mutate(genome)"),
    "unknown baseline": (GOOD.replace('BASELINE = "a"', 'BASELINE = "c"'),
                         f"{WHERE}: BASELINE must be None or the name of a member of known() (a, b), not 'c'"),
    "tuple in a genome": (GOOD.replace('"b": {"x": 2.0}', '"b": {"x": (2.0,)}'),
                          f"{WHERE}: known() member 'b' is not plain JSON"),
    "empty noun": (GOOD.replace('NOUN = "rule"', 'NOUN = ""'), f"{WHERE}: NOUN must be a non-empty one-line string"),
    "known fails": (GOOD.replace('return {"a": {"x": 1.0}', 'return 1 / 0, {"a": {"x": 1.0}'),
                    f"{WHERE}: known() failed: ZeroDivisionError: division by zero"),
    "mutate in place": (GOOD.replace('return {"x": genome["x"] + 1.0}', 'genome["x"] += 1.0\n    return genome'),
                        f"{WHERE}: mutate or crossover modified its parent genome"),
    "sample not JSON": (GOOD.replace('return {"x": rng.choice([1.0, 2.0, 3.0])}', 'return {"x": float("nan")}'),
                        f"{WHERE}: sample(rng) returned a genome that is not plain JSON"),
    "two-line description": (GOOD.replace("return f\"x = {genome['x']:g}\"", 'return "x\\ny"'),
                             f"{WHERE}: describe(genome) must return one line of text"),
    "render not a dict": (GOOD.replace('return {"rule.py": f"X = {genome[\'x\']!r}\\n"}', 'return "X = 1"'),
                          f"{WHERE}: render(genome) must return a non-empty dict of path -> source, not str"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_search_space_is_one_line_naming_the_piece(case):
    source, message = BROKEN[case]
    assert source != GOOD, case
    with pytest.raises(SearchSpaceError) as e:
        check_search_space(module_from(source), WHERE)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_render_may_write_only_editable_files():
    check_search_space(module_from(GOOD), WHERE, editable=["rule.py"])
    with pytest.raises(SearchSpaceError, match=r"render\(genome\) wrote rule.py, which is not among the "
                                               r"template's editable files \(loss.py\)"):
        check_search_space(module_from(GOOD), WHERE, editable=["loss.py"])


def test_optional_constants_get_their_defaults():
    source = "\n".join(line for line in GOOD.splitlines() if not line.startswith(("BASELINE", "NOUN", "GOAL")))
    space = check_search_space(module_from(source), WHERE)
    assert (space.BASELINE, space.NOUN, space.GOAL) == (None, bss.DEFAULTS["NOUN"], bss.DEFAULTS["GOAL"])
    idea = EvolveProposer(space, "max").next_idea(0, [])
    assert idea.title.startswith("Evolved candidate: ")


def test_load_search_space_reports_a_missing_file_and_an_import_error(tmp_path):
    root = tmp_path / "grokking"
    shutil.copytree(ROOT / "tests" / "fixtures" / "grokking", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "search_space.py").write_text("def broken(:\n")
    with pytest.raises(SearchSpaceError, match=r"search_space.py: cannot be loaded: SyntaxError"):
        load_search_space(load_template(str(root)))
    (root / "search_space.py").unlink()
    with pytest.raises(SearchSpaceError, match="template grokking has no search_space.py, which --proposer evolve"):
        load_search_space(load_template(str(root)))


# ---------------------------------------------------------------- the shared genome helpers


def test_round_sig():
    assert bss.round_sig(0.000123456) == 0.000123 and bss.round_sig(123456.0) == 123000.0
    assert bss.round_sig(2.0 / 3.0, digits=2) == 0.67
    assert json.dumps(bss.round_sig(-0.0)) == "0.0"  # never "-0.0"


def test_draws_and_perturbations_stay_in_range_with_one_rng_call_each():
    for seed in range(300):
        for log, (lo, hi) in ((False, (-1.0, 1.0)), (True, (1e-5, 3.0))):
            rng, ref = random.Random(seed), random.Random(seed)
            x = bss.uniform(rng, lo, hi, log=log)
            ref.uniform(0.0, 1.0)
            assert lo <= x <= hi and x == bss.round_sig(x) and rng.getstate() == ref.getstate()
            y = bss.perturb(x, rng, lo, hi, sigma=2.0, log=log)
            ref.gauss(0.0, 1.0)
            assert lo <= y <= hi and y == bss.round_sig(y) and rng.getstate() == ref.getstate()
    assert bss.perturb(1.0, random.Random(0), 0.0, 1.0, sigma=1e-9) == 1.0  # at a bound it may not move
    r = bss.Range(0.1, 2.0, 0.3, log=True)
    assert r.draw(random.Random(1)) == bss.uniform(random.Random(1), 0.1, 2.0, log=True)
    assert r.perturb(1.0, random.Random(1)) == bss.perturb(1.0, random.Random(1), 0.1, 2.0, 0.3, log=True)
    r.check(2.0, "w")
    for bad in (2.5, float("nan"), True, "1"):
        with pytest.raises(ValueError, match=r"w must be a number in \[0.1, 2.0\]"):
            r.check(bad, "w")


def test_choices():
    options = (32, 64, 128)
    for seed in range(50):
        assert bss.choose_other(options, 64, random.Random(seed)) in (32, 128)
        assert bss.neighbour(options, 64, random.Random(seed)) in (32, 128)
        assert bss.neighbour(options, 32, random.Random(seed)) in (32, 64)  # clamped at the end
        assert bss.neighbour(options, 32, random.Random(seed), bounce=True) == 64
        assert bss.neighbour(options, 128, random.Random(seed), bounce=True) == 64
        assert bss.weighted_choice(random.Random(seed), [("a", 1.0), ("b", 0.0)]) == "a"


def test_mutate_until_changed_retries_with_a_bound():
    calls = []

    def step(g, rng):
        calls.append(1)
        return None if len(calls) == 1 else g if len(calls) == 2 else {**g, "x": rng.random()}

    parent = {"x": 0.0}
    child = bss.mutate_until_changed(step, parent, random.Random(0))
    assert len(calls) == 3 and child != parent and parent == {"x": 0.0}
    calls.clear()
    stuck = bss.mutate_until_changed(lambda g, rng: calls.append(1) or g, parent, random.Random(0), tries=7)
    assert len(calls) == 7 and stuck == parent and stuck is not parent


def test_transformer_mutate_now_retries_when_nothing_changed(monkeypatch):
    """Its mutate used to return the parent unchanged when a perturbation landed back on the same value."""
    tss = load_module(ROOT / "templates" / "transformer" / "search_space.py", "transformer_space_retry")
    parent = tss.known()["baseline"]
    attempts = []

    def change(g, rng):
        attempts.append(1)
        return dict(g) if len(attempts) < 3 else {**g, "norm": "rmsnorm"}

    monkeypatch.setattr(tss, "_change_genes", change)
    assert tss.mutate(parent, random.Random(0))["norm"] == "rmsnorm" and len(attempts) == 3


# ---------------------------------------------------------------- symmetries: one evaluation per canonical form


def _rescaled(genome, c: float):
    """The genome with z replaced by c * z: the same loss at c times each beta (search_space.canonical)."""
    g = json.loads(json.dumps(genome))
    for _, n in ss._nodes(g):
        if n["op"] == "term" and n["units"] == "z":
            n["scale"] *= c
        elif n["op"] == "term":
            n["margin"] /= c
        elif n["op"] == "gate":
            n["shift"], n["tau"] = n["shift"] / c, n["tau"] / c
    return g


def test_discopop_canonical_forms_are_its_metric_symmetries():
    dpo = ss.known()["dpo"]
    assert ss.canonical(ss.term("logistic", 1.45)) == ss.canonical(ss.term("logistic", 0.959)) == ss.canonical(dpo)
    a, b = ss.term("hinge", 1.0, 0.5), ss.term("square", 1.0, 0.5, "rho")
    assert ss.canonical(ss.weighted_sum(a, b, 2.0, 1.0)) == ss.canonical(ss.weighted_sum(a, b, 1.0, 0.5))
    assert ss.canonical(ss.weighted_sum(a, b, 1.0, 1.0)) != ss.canonical(ss.weighted_sum(a, b, 1.0, 0.5))
    # A blend of a loss with itself is the loss; so, up to a factor, is a root sum of the loss with itself.
    assert ss.canonical(ss.gate(dpo, dpo, 0.359, 0.357)) == ss.canonical(dpo)
    assert ss.canonical(ss.weighted_sum(a, a, 0.3, 1.2)) == ss.canonical(a)
    assert ss.canonical(ss.gate(a, b, 0.5, 0.1)) != ss.canonical(a)
    keys = {json.dumps(ss.canonical(g), sort_keys=True) for g in ss.known().values()}
    assert len(keys) == len(ss.known())  # the published losses are not copies of each other
    (pc, pr, rc, rr), beta = wide_margin_batch()
    checked = 0
    for g in GENOMES[:60]:
        for c in (2.0, 0.5):  # exact in binary, so canonical's rounding meets exactly
            h = _rescaled(g, c)
            try:
                ss.validate(h)
            except ValueError:  # a constant left its range: the other factor, or the next genome
                continue
            assert ss.canonical(h) == ss.canonical(g) == ss.canonical(ss.canonical(g)), ss.describe(g)
            # The symmetry itself: the rescaled loss at beta is the loss at c * beta, for every margin.
            mine = loss_from_source(ss.render(h)["loss.py"])(pc, pr, rc, rr, beta)
            theirs = loss_from_source(ss.render(g)["loss.py"])(pc, pr, rc, rr, c * beta)
            np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=2e-5, atol=1e-5)
            checked += 1
            break
    assert checked >= 30


def test_evolve_spends_no_evaluation_on_a_copy():
    space = check_search_space(load_module(DISCOPOP / "search_space.py", "discopop_space_copies"), "test")
    proposer = EvolveProposer(space, "max", seed=3, baseline_metric=1.0)
    from base.records import ArchiveEntry
    from scientist.proposers import IdeaContext

    archive, keys = [], {json.dumps(space.canonical(space.known()["dpo"]), sort_keys=True)}
    for idx in range(40):
        idea = proposer.next_idea(idx, archive)
        key = json.dumps(space.canonical(idea.genome), sort_keys=True)
        assert key not in keys, idea.title  # neither the baseline nor an earlier idea, up to a symmetry
        keys.add(key)
        archive.append(ArchiveEntry(idea=idea, metric=1.0 + 0.01 * (idx % 7)))
        history = []
        for run in (2, 3):
            ctx = IdeaContext(idx=idx, idea=idea, run_idx=run, runs=3, attempt=1, attempts=1, files={},
                              history=history, baseline="", direction="max")
            genome = proposer.propose(ctx).meta["genome"]
            run_keys = {json.dumps(space.canonical(g), sort_keys=True)
                        for g in [idea.genome, space.known()["dpo"], *(a.meta["genome"] for a in history)]}
            assert json.dumps(space.canonical(genome), sort_keys=True) not in run_keys
            history.append(SimpleNamespace(status="ok", metric=1.0, meta={"genome": genome}))

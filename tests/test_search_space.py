"""The DiscoPOP search space: known members are the candidate losses, random members are safe losses."""

import copy
import importlib.util
import inspect
import json
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DISCOPOP

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
        harness.gate(loss_from_source(ss.render(g)["loss.py"]))  # exits the process on failure


def test_evolved_ideas_never_repeat_the_baseline():
    """A mutation that lands back on the shipped baseline would be an idea that is the baseline itself."""
    from types import SimpleNamespace

    from scientist.proposers.evolve import EvolveProposer

    baseline = {"lr": 1}
    space = SimpleNamespace(BASELINE="base", known=lambda: {"base": baseline}, describe=str,
                            sample=lambda rng: {"lr": rng.choice([1, 2])},
                            mutate=lambda g, rng: {"lr": rng.choice([1, 2])},
                            crossover=lambda a, b, rng: a)
    for seed in range(20):
        idea = EvolveProposer(space, "max", seed=seed, baseline_metric=0.5).next_idea(0, [])
        assert idea["genome"] != baseline

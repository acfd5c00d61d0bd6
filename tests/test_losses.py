"""The shipped reference losses against values computed by hand, and their gradients."""

import importlib.util
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DISCOPOP

# One example: policy log-ratio chosen-rejected = 1, reference log-ratio = 0, so rho = 1.
PC, PR, RC, RR = -1.0, -2.0, -1.5, -1.5
RHO = (PC - PR) - (RC - RR)


def load(name: str):
    path = DISCOPOP / "candidates" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.loss


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def by_hand(name: str, beta: float) -> float:
    if name == "dpo":
        return math.log(1.0 + math.exp(-beta * RHO))
    if name == "ipo":
        return (RHO - 1.0 / (2.0 * beta)) ** 2
    if name == "slic":
        return max(0.0, 1.0 - beta * RHO)
    if name == "lrml":
        z = beta * RHO
        w = sigmoid(z / 0.05)
        return (1 - w) * math.log(1 + math.exp(-z)) + w * math.exp(-z)
    if name == "kto_pair":  # a batch of one: the KL reference points are its own clipped log-ratios
        chosen, rejected = PC - RC, PR - RR
        chosen_kl, rejected_kl = max(chosen, 0.0), max(rejected, 0.0)
        return ((1 - sigmoid(beta * (chosen - rejected_kl))) + (1 - sigmoid(beta * (chosen_kl - rejected)))) / 2
    raise KeyError(name)


NAMES = ["dpo", "ipo", "slic", "kto_pair", "lrml"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beta", [0.1, 0.25, 0.5, 2.0])
def test_loss_matches_hand_computed_value(name, beta):
    args = [jnp.array([v], jnp.float32) for v in (PC, PR, RC, RR)]
    got = load(name)(*args, jnp.float32(beta))
    assert got.shape == (1,)
    assert float(got[0]) == pytest.approx(by_hand(name, beta), rel=1e-5, abs=1e-6)


def test_template_baseline_is_dpo():
    batch = [jnp.array([PC, -3.0]), jnp.array([PR, -1.0]), jnp.array([RC, -2.0]), jnp.array([RR, -2.5])]
    spec = importlib.util.spec_from_file_location("shipped", DISCOPOP / "loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    np.testing.assert_allclose(module.loss(*batch, 0.3), load("dpo")(*batch, 0.3), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_are_finite_even_for_extreme_margins(name):
    loss = load(name)
    # Margins from -200 to 200 nats: LRML's exp(-z) would overflow without its guard.
    pc = jnp.linspace(-200.0, 0.0, 41)
    rest = [jnp.full((41,), -100.0)] * 3

    def mean_loss(pc):
        return jnp.mean(loss(pc, *rest, 1.0))

    value, grad = jax.value_and_grad(mean_loss)(pc)
    assert bool(jnp.isfinite(value))
    assert bool(jnp.all(jnp.isfinite(grad)))
    assert bool(jnp.any(grad != 0))


def test_lrml_gradient_at_zero_has_opposite_sign_to_dpo():
    """The fact DESIGN.md asks the bench to show, not hide."""
    z = jnp.zeros(1)

    def grad_of(name):
        return jax.grad(lambda pc: jnp.sum(load(name)(pc, z, z, z, 1.0)))(z)[0]

    assert float(grad_of("dpo")) < 0 < float(grad_of("lrml"))


def _upstream_kto_pair(pc, pr, rc, rr, beta):
    """A transcription of the DiscoPOP repository's `kto_pair_loss` as TRL's trainer uses it (the mean of
    the concatenated terms): luchris429/DiscoPOP, src/alignment/gpo.py, commit 7c30efa5e7456cfdba37af1da051bcfdf1830a07
    (the same formula as huggingface/trl's trl/trainer/dpo_trainer.py before `kto_pair` was removed).
    torch's `.clamp(min=0)` passes the gradient where the mean is positive, as jnp.maximum does."""
    chosen_kl = jnp.maximum((pc - rc).mean(), 0.0)
    rejected_kl = jnp.maximum((pr - rr).mean(), 0.0)
    losses = jnp.concatenate([1 - jax.nn.sigmoid(beta * ((pc - rc) - rejected_kl)),
                              1 - jax.nn.sigmoid(beta * (chosen_kl - (pr - rr)))])
    return losses.mean()


def test_kto_pair_matches_upstream_value_and_gradient():
    """Value and gradient of the batch loss as upstream computes them, with KL reference points above zero
    (so the clamp passes the gradient; a stop_gradient there changes the policy-chosen gradient by about half)."""
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    pc, pr, rc, rr = (jax.random.normal(k, (16,)) + off for k, off in zip(keys, (0.5, 0.8, -0.5, -0.5), strict=True))
    ours = lambda pc, pr: jnp.mean(load("kto_pair")(pc, pr, rc, rr, 0.7))  # noqa: E731
    theirs = lambda pc, pr: _upstream_kto_pair(pc, pr, rc, rr, 0.7)  # noqa: E731
    assert float((pc - rc).mean()) > 0 and float((pr - rr).mean()) > 0
    np.testing.assert_allclose(ours(pc, pr), theirs(pc, pr), rtol=1e-6)
    for argnum in (0, 1):
        np.testing.assert_allclose(jax.grad(ours, argnum)(pc, pr), jax.grad(theirs, argnum)(pc, pr), rtol=1e-5,
                                   atol=1e-7)

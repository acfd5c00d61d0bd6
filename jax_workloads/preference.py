"""Offline preference optimisation on a contextual bandit, in the PureJaxRL shape.

The world: every (prompt, response) pair has a feature vector; a hidden reward
function scores it; a reference ("SFT") policy puts a softmax over each prompt's
responses. A preference data set holds pairs of responses sampled from the
reference policy and labelled by a Bradley-Terry model of the hidden reward.

The policy is the reference plus a learned MLP correction on the features,
initialised to zero so that training starts exactly at the reference. It is
trained on the preference pairs with a user-supplied per-example loss of the
four log-probability arrays (the DiscoPOP signature). Because the correction is
a function of features, the trained policy generalises to prompts it never saw;
the sealed evaluator scores it exactly (expected true reward and KL to the
reference) on held-out prompts.

`make_train(config, loss_fn)` returns a pure `train(rng, data, beta)` that is
jitted and vmapped over seeds and betas in one compiled call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads.seeds import seed_key

LossFn = Callable[..., jax.Array]


@dataclass(frozen=True)
class WorldConfig:
    """Shape of the bandit world. The hidden reward is fixed by `world_seed`."""

    feature_dim: int = 16
    responses: int = 32
    reward_hidden: int = 32
    ref_temperature: float = 1.0
    ref_reward_weight: float = 0.5
    label_temperature: float = 0.5


@dataclass(frozen=True)
class TrainConfig:
    """Policy and optimiser settings of the (fixed) training harness."""

    hidden: int = 64
    steps: int = 400
    learning_rate: float = 3e-3
    batch_size: int = 512


class Prompts(NamedTuple):
    """A set of prompts with their responses' features and reference log-probs."""

    features: jax.Array  # [P, K, D]
    ref_logps: jax.Array  # [P, K]


class Preferences(NamedTuple):
    """Pairs (prompt, chosen, rejected) over a `Prompts` set."""

    prompt: jax.Array  # [N] int32
    chosen: jax.Array  # [N] int32
    rejected: jax.Array  # [N] int32


# --- the world (trusted side: only the data preparer and the evaluator call these) ---


def _reward_params(world: WorldConfig, world_seed: int) -> dict[str, jax.Array]:
    k1, k2, k3 = jax.random.split(seed_key(world_seed), 3)  # every bit of a 63-bit secret (jax_workloads.seeds)
    d, h = world.feature_dim, world.reward_hidden
    return {
        "w1": jax.random.normal(k1, (d, h)) / jnp.sqrt(d),
        "w2": jax.random.normal(k2, (h,)) / jnp.sqrt(h),
        "ref": jax.random.normal(k3, (d,)) / jnp.sqrt(d),
    }


def true_reward(world: WorldConfig, world_seed: int, features: jax.Array) -> jax.Array:
    """Hidden reward of each response, roughly unit scale. Never shown to training."""
    p = _reward_params(world, world_seed)
    return jnp.tanh(features @ p["w1"]) @ p["w2"] * 2.0


def make_prompts(world: WorldConfig, world_seed: int, rng: jax.Array, n: int) -> Prompts:
    """Sample `n` prompts: features and a reference policy correlated with the reward."""
    k_feat, k_noise = jax.random.split(rng)
    feats = jax.random.normal(k_feat, (n, world.responses, world.feature_dim))
    p = _reward_params(world, world_seed)
    noise = jax.random.normal(k_noise, (n, world.responses))
    logits = world.ref_reward_weight * true_reward(world, world_seed, feats) + feats @ p["ref"] + noise
    ref_logps = jax.nn.log_softmax(logits / world.ref_temperature, axis=-1)
    return Prompts(feats, ref_logps)


def sample_preferences(
    world: WorldConfig, world_seed: int, prompts: Prompts, rng: jax.Array, n_pairs: int
) -> Preferences:
    """Pairs of distinct responses drawn from the reference, labelled Bradley-Terry."""
    kp, ka, kb, kl = jax.random.split(rng, 4)
    n_prompts = prompts.ref_logps.shape[0]
    prompt = jax.random.randint(kp, (n_pairs,), 0, n_prompts)
    logits = prompts.ref_logps[prompt]
    a = jax.random.categorical(ka, logits)
    # Draw the second response from the reference restricted to b != a.
    b = jax.random.categorical(kb, jnp.where(jax.nn.one_hot(a, logits.shape[-1]) > 0, -jnp.inf, logits))
    r = true_reward(world, world_seed, prompts.features)
    margin = (r[prompt, a] - r[prompt, b]) / world.label_temperature
    a_wins = jax.random.bernoulli(kl, jax.nn.sigmoid(margin))
    chosen = jnp.where(a_wins, a, b).astype(jnp.int32)
    rejected = jnp.where(a_wins, b, a).astype(jnp.int32)
    return Preferences(prompt.astype(jnp.int32), chosen, rejected)


# --- the policy (shared by training and evaluation) ---


def init_policy(rng: jax.Array, feature_dim: int, hidden: int) -> dict[str, jax.Array]:
    """MLP correction to the reference logits; zero last layer so pi == pi_ref at start."""
    return {
        "w1": jax.random.normal(rng, (feature_dim, hidden)) / jnp.sqrt(feature_dim),
        "b1": jnp.zeros((hidden,)),
        "w2": jnp.zeros((hidden,)),
        "b2": jnp.zeros(()),
    }


def policy_logps(params: dict[str, jax.Array], prompts: Prompts) -> jax.Array:
    """Log-probabilities [P, K] of the policy over each prompt's responses."""
    h = jnp.tanh(prompts.features @ params["w1"] + params["b1"])
    return jax.nn.log_softmax(prompts.ref_logps + h @ params["w2"] + params["b2"], axis=-1)


# --- training (runs inside the sandbox with the candidate's loss) ---


def make_train(config: TrainConfig, loss_fn: LossFn) -> Callable:
    """Return `train(rng, prompts, prefs, beta) -> (params, loss_curve)`, pure and jittable."""
    import optax  # here, not at the top: the evaluator imports this module but never trains (about 50 ms)

    tx = optax.adam(config.learning_rate)

    def train(rng: jax.Array, prompts: Prompts, prefs: Preferences, beta: jax.Array):
        k_init, k_batches = jax.random.split(rng)
        params = init_policy(k_init, prompts.features.shape[-1], config.hidden)
        n = prefs.prompt.shape[0]
        batch = min(config.batch_size, n)

        def objective(params, idx):
            logps = policy_logps(params, prompts)
            p, c, r = prefs.prompt[idx], prefs.chosen[idx], prefs.rejected[idx]
            per_example = loss_fn(
                logps[p, c], logps[p, r], prompts.ref_logps[p, c], prompts.ref_logps[p, r], beta
            )
            return jnp.mean(per_example)

        def step(carry, key):
            params, opt_state = carry
            idx = jax.random.choice(key, n, (batch,), replace=False)
            value, grads = jax.value_and_grad(objective)(params, idx)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        keys = jax.random.split(k_batches, config.steps)
        (params, _), curve = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params, curve

    return train


def make_sweep(config: TrainConfig, loss_fn: LossFn) -> Callable:
    """Train over seeds (leading axis of rngs and prefs) x betas in one compiled call."""
    train = make_train(config, loss_fn)
    over_betas = jax.vmap(train, in_axes=(None, None, None, 0))
    over_seeds = jax.vmap(over_betas, in_axes=(0, None, 0, None))
    return jax.jit(over_seeds)


# --- exact evaluation (trusted side) ---


def reward_and_kl(
    params: dict[str, jax.Array], prompts: Prompts, reward: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Exact expected true reward and KL(pi || pi_ref), averaged over prompts."""
    logps = policy_logps(params, prompts)
    probs = jnp.exp(logps)
    expected = jnp.sum(probs * reward, axis=-1).mean()
    kl = jnp.sum(probs * (logps - prompts.ref_logps), axis=-1).mean()
    return expected, kl


MIX_WEIGHTS = np.linspace(0.0, 1.0, 17)[1:-1]  # the mixtures' weights between two policies (ends: the policies)


def mixture_reward_and_kl(
    logps: jax.Array, ref_logps: jax.Array, reward: jax.Array, weights: np.ndarray = MIX_WEIGHTS
) -> tuple[jax.Array, jax.Array]:
    """Exact expected reward and KL of every two-policy mixture among `logps` [B, P, K] and the reference [P, K].

    The mixture of pi_i and pi_j with weight w answers each prompt from pi_i with probability w, else
    from pi_j: its response distribution is w pi_i + (1 - w) pi_j, a policy built from trained ones
    only. Returns two arrays [pairs * len(weights)], pairs over the B + 1 policies (reference first).
    """
    policies = jnp.concatenate([ref_logps[None], logps])
    i, j = np.triu_indices(policies.shape[0], k=1)
    log_w = jnp.log(jnp.asarray(weights, logps.dtype))[:, None, None, None]
    log_1w = jnp.log1p(-jnp.asarray(weights, logps.dtype))[:, None, None, None]
    mixed = jnp.logaddexp(log_w + policies[i][None], log_1w + policies[j][None])  # [W, pairs, P, K]
    probs = jnp.exp(mixed)
    expected = jnp.sum(probs * reward, axis=-1).mean(-1)
    kl = jnp.sum(probs * (mixed - ref_logps), axis=-1).mean(-1)
    return expected.reshape(-1), kl.reshape(-1)


def reachable_frontier(kl: np.ndarray, gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frontier of the points (KL, gain) of policies, their mixtures and the reference at (0, 0).

    It is their upper concave hull up to its highest point. Why every point of it is reachable: the
    mixture that answers from policy a with probability w, else from b, has gain w g_a + (1 - w) g_b
    exactly (gain is linear in the policy) and KL at most w KL_a + (1 - w) KL_b (KL(pi || ref) is
    convex in pi), so each point of a chord between reachable points is matched or beaten by a real
    policy. Nothing above the hull is credited, however a sweep's points are spaced.
    """
    kl, gain = np.asarray(kl, float).ravel(), np.asarray(gain, float).ravel()
    keep = gain > 0.0  # below the reference's gain a point never lies on the rising part of the hull
    x, y = np.concatenate([[0.0], np.maximum(kl[keep], 0.0)]), np.concatenate([[0.0], gain[keep]])
    order = np.lexsort((-y, x))  # by KL, the highest gain first among equal KLs
    x, y = x[order], y[order]
    first = np.concatenate([[True], np.diff(x) > 0])
    hull: list[tuple[float, float]] = []
    for p in zip(x[first], y[first], strict=True):
        # Drop the last vertex while it lies on or below the chord from the one before it to p.
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(p)
    xs, ys = np.array(hull).T
    top = int(np.argmax(ys))  # past the highest point more KL buys nothing: the frontier stays flat
    return xs[: top + 1], ys[: top + 1]


def frontier_value(kl: np.ndarray, gain: np.ndarray, budget: float) -> float:
    """Reward gain reachable within a KL budget by the given policies and their mixtures.

    `reachable_frontier` read at `budget` (flat beyond its highest point); at least 0, the reference.
    """
    xs, ys = reachable_frontier(kl, gain)
    return float(np.interp(budget, xs, ys))


def frontier_auc(kl: np.ndarray, gain: np.ndarray, budget: float) -> float:
    """Mean of the reachable frontier over KL in [0, budget] (area divided by budget)."""
    xs, ys = reachable_frontier(kl, gain)
    return float(np.mean(np.interp(np.linspace(0.0, budget, 65), xs, ys)))

"""Denoising diffusion (DDPM) on 2D toy data sets, in the PureJaxRL shape.

Data: four 2D distributions made in code (moons, circles, a two-armed spiral and
a checkerboard), each roughly inside [-2, 2]^2.

Model: a small MLP denoiser f(x_t, tau) with a sinusoidal embedding of the time
tau in [0, 1] (and of the coordinates, which helps a small MLP draw sharp 2D
shapes). Its architecture is fixed and trusted: the evaluator runs it from the
exported parameters.

The recipe is the candidate's (templates/diffusion/ddpm.py): a noise schedule
alpha_bar over T training steps, a per-example training loss of the network
output (its target and weighting), and a sampler given as a table of per-step
coefficients. Every first-order sampler of the DDPM family is one such table:

    x_K ~ N(0, I);   x <- a_k * x + b_k * f(x, tau_k) + c_k * z_k,   z_k ~ N(0, I),   k = 1..K

(ancestral DDPM, DDIM with any eta, fewer or more steps, eps-, x0- or
v-prediction: all are linear in x and f). Because the table is plain numbers,
the trusted evaluator can run the sampling loop itself, with its own noise.

`make_train(config, schedule_fn, loss_fn)` returns a pure `train(rng, data)`;
`make_sweep` jits and vmaps it over seeds x data sets in one compiled call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import optax

from jax_workloads.seeds import seed_key

DATASETS = ("moons", "circles", "spiral", "checkerboard")

Params = dict[str, jax.Array]


@dataclass(frozen=True)
class NetConfig:
    """The fixed denoiser: an MLP of `layers` residual blocks of width `hidden`."""

    hidden: int = 64
    layers: int = 3
    time_dim: int = 32     # sinusoidal features of tau
    coord_dim: int = 32    # sinusoidal features of each coordinate (0: feed x as is)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the (fixed) training harness."""

    timesteps: int = 100        # T: the discrete noise levels the schedule covers
    steps: int = 2000           # optimiser steps
    batch_size: int = 256
    learning_rate: float = 5e-3
    net: NetConfig = NetConfig()


# --- data (trusted side makes it; the harness trains on it) ---


def _moons(rng: jax.Array, n: int) -> jax.Array:
    k_side, k_angle = jax.random.split(rng)
    upper = jax.random.bernoulli(k_side, 0.5, (n,))
    angle = jax.random.uniform(k_angle, (n,), maxval=jnp.pi)
    x = jnp.where(upper, jnp.cos(angle), 1.0 - jnp.cos(angle))
    y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
    return jnp.stack([x - 0.5, y - 0.25], -1) * 1.3


def _circles(rng: jax.Array, n: int) -> jax.Array:
    k_ring, k_angle = jax.random.split(rng)
    radius = jnp.where(jax.random.bernoulli(k_ring, 0.5, (n,)), 1.6, 0.8)
    angle = jax.random.uniform(k_angle, (n,), maxval=2 * jnp.pi)
    return radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)


def _spiral(rng: jax.Array, n: int) -> jax.Array:
    k_arm, k_pos = jax.random.split(rng)
    # Uniform in sqrt so that points are spread evenly along the arm, not bunched at the centre.
    s = jnp.sqrt(jax.random.uniform(k_pos, (n,), minval=0.02))
    angle = s * 3.0 * jnp.pi + jnp.pi * jax.random.bernoulli(k_arm, 0.5, (n,))
    return 1.9 * s[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)


def _checkerboard(rng: jax.Array, n: int) -> jax.Array:
    k_x, k_y, k_row = jax.random.split(rng, 3)
    x = jax.random.uniform(k_x, (n,), minval=-2.0, maxval=2.0)
    # y in one of the two unit squares of its column that are "black": parity of floor(x) + floor(y) is even.
    y = jax.random.uniform(k_y, (n,)) - 2.0 * jax.random.bernoulli(k_row, 0.5, (n,)) + jnp.floor(x) % 2
    return jnp.stack([x, y], -1)


_SHAPES = {"moons": _moons, "circles": _circles, "spiral": _spiral, "checkerboard": _checkerboard}
# Gaussian jitter per data set, so that each is a density and not a curve.
_NOISE = {"moons": 0.06, "circles": 0.05, "spiral": 0.05, "checkerboard": 0.0}


def sample_dataset(name: str, rng: jax.Array, n: int) -> jax.Array:
    """`n` points [n, 2] of the named 2D distribution."""
    k_shape, k_noise = jax.random.split(rng)
    return _SHAPES[name](k_shape, n) + _NOISE[name] * jax.random.normal(k_noise, (n, 2))


def make_datasets(rng: jax.Array, n: int) -> jax.Array:
    """`n` points of every data set in DATASETS, [len(DATASETS), n, 2], from independent keys."""
    keys = jax.random.split(rng, len(DATASETS))
    return jnp.stack([sample_dataset(name, k, n) for name, k in zip(DATASETS, keys, strict=True)])


def make_points(seed: int, seeds: int, n: int) -> jax.Array:
    """[seeds, len(DATASETS), n, 2]: a draw of every data set per seed, from `seed`.

    Seed s's points depend only on (seed, s), not on how many seeds there are.
    """
    root = seed_key(seed)  # every bit of a 63-bit secret (jax_workloads.seeds)
    return jnp.stack([make_datasets(jax.random.fold_in(root, s), n) for s in range(seeds)])


# --- the denoiser (shared by training and evaluation) ---


def sinusoidal(x: jax.Array, dim: int, scale: float) -> jax.Array:
    """Transformer-style features [..., dim] of a scalar array: sin and cos at geometric frequencies."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10_000.0) * jnp.arange(half) / half)
    angles = scale * x[..., None] * freqs
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], -1)


def _input_dim(net: NetConfig) -> int:
    return net.time_dim + (2 * net.coord_dim if net.coord_dim else 2)


def init_denoiser(rng: jax.Array, net: NetConfig) -> Params:
    """Parameters of the denoiser: input layer, `layers` residual blocks (stacked), output layer."""
    k_in, k_hidden, k_out = jax.random.split(rng, 3)
    d, h = _input_dim(net), net.hidden
    return {
        "w_in": jax.random.normal(k_in, (d, h)) / jnp.sqrt(d),
        "b_in": jnp.zeros((h,)),
        "w_hidden": jax.random.normal(k_hidden, (net.layers, h, h)) / jnp.sqrt(h),
        "b_hidden": jnp.zeros((net.layers, h)),
        "w_out": jax.random.normal(k_out, (h, 2)) / jnp.sqrt(h) * 0.1,
        "b_out": jnp.zeros((2,)),
    }


def param_shapes(net: NetConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of one denoiser's parameters (what the evaluator expects per seed and data set)."""
    d, h = _input_dim(net), net.hidden
    return {"w_in": (d, h), "b_in": (h,), "w_hidden": (net.layers, h, h), "b_hidden": (net.layers, h),
            "w_out": (h, 2), "b_out": (2,)}


def denoiser(params: Params, x: jax.Array, tau: jax.Array, net: NetConfig) -> jax.Array:
    """The network output [B, 2] at points x [B, 2] and times tau [B] in [0, 1]."""
    # 1000 * tau: the embedding's frequencies were made for integer steps up to ~1000.
    feats = [sinusoidal(tau, net.time_dim, 1000.0)]
    if net.coord_dim:
        # Scale 25 (as in tiny-diffusion): features fine enough to resolve the data's thin structures.
        feats.append(sinusoidal(x, net.coord_dim, 25.0).reshape(x.shape[0], -1))
    else:
        feats.append(x)
    h = jax.nn.gelu(jnp.concatenate(feats, -1) @ params["w_in"] + params["b_in"])

    def block(h, layer):
        w, b = layer
        return h + jax.nn.gelu(h @ w + b), None

    h, _ = jax.lax.scan(block, h, (params["w_hidden"], params["b_hidden"]))
    return h @ params["w_out"] + params["b_out"]


# --- training (runs inside the sandbox with the candidate's schedule and loss) ---

ScheduleFn = Callable[[int], jax.Array]
LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def step_times(timesteps: int) -> jax.Array:
    """The network's time input tau for training step i = 0..T-1: (i + 1) / T."""
    return jnp.arange(1, timesteps + 1, dtype=jnp.float32) / timesteps


def make_train(config: TrainConfig, schedule_fn: ScheduleFn, loss_fn: LossFn) -> Callable:
    """Return `train(rng, data [N, 2]) -> (params, loss_curve [steps])`, pure and jittable.

    Each optimiser step draws a batch of data points x0, noise levels i uniform in 0..T-1 and
    Gaussian noise eps, forms x_t = sqrt(alpha_bar_i) x0 + sqrt(1 - alpha_bar_i) eps and
    minimises the mean of the candidate's loss(f(x_t, tau_i), x0, eps, alpha_bar_i).
    """
    # Cosine decay to zero: at a fixed, small step budget the late small steps sharpen the samples most.
    lr = optax.cosine_decay_schedule(config.learning_rate, config.steps)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    taus = step_times(config.timesteps)

    def train(rng: jax.Array, data: jax.Array):
        alpha_bar = jnp.asarray(schedule_fn(config.timesteps), jnp.float32)
        k_init, k_steps = jax.random.split(rng)
        params = init_denoiser(k_init, config.net)

        def objective(params, key):
            k_idx, k_t, k_eps = jax.random.split(key, 3)
            x0 = data[jax.random.randint(k_idx, (config.batch_size,), 0, data.shape[0])]
            i = jax.random.randint(k_t, (config.batch_size,), 0, config.timesteps)
            eps = jax.random.normal(k_eps, x0.shape)
            ab = alpha_bar[i]
            x_t = jnp.sqrt(ab)[:, None] * x0 + jnp.sqrt(1.0 - ab)[:, None] * eps
            out = denoiser(params, x_t, taus[i], config.net)
            return jnp.mean(loss_fn(out, x0, eps, ab))

        def step(carry, key):
            params, opt_state = carry
            value, grads = jax.value_and_grad(objective)(params, key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        keys = jax.random.split(k_steps, config.steps)
        (params, _), curve = jax.lax.scan(step, (params, tx.init(params)), keys)
        return params, curve

    return train


def make_sweep(config: TrainConfig, schedule_fn: ScheduleFn, loss_fn: LossFn) -> Callable:
    """Train every seed x data set in one compiled call: rngs [S, D] keys, data [S, D, N, 2]."""
    train = make_train(config, schedule_fn, loss_fn)
    return jax.jit(jax.vmap(jax.vmap(train)))


# --- sampling (trusted: the evaluator runs it with its own noise) ---


def sample(params: Params, table: dict[str, jax.Array], rng: jax.Array, n: int, net: NetConfig) -> jax.Array:
    """`n` samples [n, 2] of one denoiser with the sampler table {"tau", "a", "b", "c"}, each [K]."""
    k_init, k_steps = jax.random.split(rng)

    def step(x, inputs):
        tau, a, b, c, key = inputs
        out = denoiser(params, x, jnp.full((n,), tau), net)
        return a * x + b * out + c * jax.random.normal(key, x.shape), None

    keys = jax.random.split(k_steps, table["tau"].shape[0])
    x, _ = jax.lax.scan(step, jax.random.normal(k_init, (n, 2)),
                        (table["tau"], table["a"], table["b"], table["c"], keys))
    return x


# --- scoring (trusted side) ---


def sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
    """Squared Euclidean distances [n, m] between the rows of x [n, d] and y [m, d]."""
    return jnp.maximum(jnp.sum(x**2, -1)[:, None] + jnp.sum(y**2, -1)[None, :] - 2.0 * x @ y.T, 0.0)


def _rbf_mean(x: jax.Array, y: jax.Array, bandwidth: float, within: bool) -> jax.Array:
    """Mean of k(x_i, y_j) = exp(-|x_i - y_j|^2 / (2 h^2)); within one sample (x is y), over i != j."""
    total = jnp.sum(jnp.exp(-sq_dists(x, y) / (2.0 * bandwidth**2)))
    if within:
        n = x.shape[0]
        # Leaving out the diagonal k(x_i, x_i) = 1 is what makes the MMD^2 estimate unbiased.
        return (total - n) / (n * (n - 1))
    return total / (x.shape[0] * y.shape[0])


def mmd2(x: jax.Array, y: jax.Array, bandwidth: float) -> jax.Array:
    """Unbiased estimate of the squared MMD between samples x [n, 2] and y [m, 2], RBF kernel of bandwidth h.

    Zero in expectation when x and y come from the same distribution (so it can be slightly
    negative), positive otherwise.
    """
    return (_rbf_mean(x, x, bandwidth, True) + _rbf_mean(y, y, bandwidth, True)
            - 2.0 * _rbf_mean(x, y, bandwidth, False))


def memorisation(samples: jax.Array, train: jax.Array, heldout: jax.Array) -> jax.Array:
    """2 P(a sample's nearest training point is nearer than its nearest held-out point) - 1.

    `train` and `heldout` are equally large independent draws of the same distribution, so for a
    model that never saw the training points the two are exchangeable and the value is 0 up to
    noise (about 1/sqrt(n) standard deviation); samples that copy training points push it to 1.
    """
    d_train = jnp.min(sq_dists(samples, train), axis=1)
    d_heldout = jnp.min(sq_dists(samples, heldout), axis=1)
    # Ties (a sample exactly on a point of both sets) count half, so that the null value stays 0.
    nearer = jnp.mean((d_train < d_heldout) + 0.5 * (d_train == d_heldout))
    return 2.0 * nearer - 1.0


def score(samples: jax.Array, train: jax.Array, heldout: jax.Array, noise: jax.Array, bandwidth: float,
          tolerance: float) -> dict[str, jax.Array]:
    """Sample quality of one model on one data set, with copies of training points counted as noise.

    samples [M, 2] from the model, train [N, 2] the points it was trained on, heldout [N, 2] an
    independent draw it never saw, noise [M, 2] standard normal draws (the "learned nothing" reference).

    mmd_raw: MMD (the square root of the unbiased MMD^2, floored at 0) between samples and held-out points.
    memorisation: see `memorisation`; 0 when samples are as near to held-out as to training points.
    copied: the fraction of samples judged to be copies beyond `tolerance` (a generalising model's
        memorisation is 0 +- 1/sqrt(M), plus a little real overfitting), linear up to 1 for pure copies.
    mmd: mmd_raw moved towards the noise reference by `copied`: a copy counts as worthless as noise.
    """
    k_heldout = _rbf_mean(heldout, heldout, bandwidth, True)  # shared by both MMDs: the largest term, once

    def mmd(x):
        m2 = _rbf_mean(x, x, bandwidth, True) + k_heldout - 2.0 * _rbf_mean(x, heldout, bandwidth, False)
        return jnp.sqrt(jnp.maximum(m2, 0.0))

    raw, reference = mmd(samples), mmd(noise)
    mem = memorisation(samples, train, heldout)
    copied = jnp.clip((mem - tolerance) / (1.0 - tolerance), 0.0, 1.0)
    return {"mmd": raw + copied * jnp.maximum(reference - raw, 0.0), "mmd_raw": raw, "mmd_noise": reference,
            "memorisation": mem, "copied": copied}

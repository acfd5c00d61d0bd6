"""DDPM training with the deterministic DDIM sampler (Song et al., 2021), eta = 0, 50 steps.

Training is the baseline's. Sampling visits every other noise level, from the noisiest down, and
moves deterministically along the predicted noise: with x0_hat = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t),
x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s) eps, and the last step goes to ab = 1 (the clean point).
Half the network evaluations of the baseline, and no noise injected after the start.
"""

import jax.numpy as jnp

STEPS = 50


def schedule(timesteps):
    betas = jnp.minimum(jnp.linspace(1e-4, 0.02, timesteps) * (1000 / timesteps), 0.999)
    return jnp.cumprod(1.0 - betas)


def loss(output, x0, noise, alpha_bar):
    return jnp.sum((output - noise) ** 2, axis=-1)


def sampler(alpha_bar):
    timesteps = alpha_bar.shape[0]
    stride = max(1, timesteps // STEPS)
    levels = jnp.arange(timesteps - 1, -1, -stride)  # noise-level indices, noisiest first
    ab_t = alpha_bar[levels]
    ab_s = jnp.concatenate([ab_t[1:], jnp.ones(1)])  # the level each step moves to; the last is clean
    a = jnp.sqrt(ab_s / ab_t)
    b = jnp.sqrt(1.0 - ab_s) - jnp.sqrt(ab_s) * jnp.sqrt(1.0 - ab_t) / jnp.sqrt(ab_t)
    tau = (levels + 1) / timesteps
    return tau, a, b, jnp.zeros_like(a)

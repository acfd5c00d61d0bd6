"""DDPM with Min-SNR-gamma loss weighting (Hang et al., 2023), gamma = 5.

Each noise level's squared noise-prediction error is weighted by min(SNR, gamma) / SNR, with
SNR = alpha_bar / (1 - alpha_bar): the nearly clean levels, whose small errors dominate the
gradient conflicts between levels, are down-weighted. Schedule and sampler are the baseline's.
"""

import jax.numpy as jnp

GAMMA = 5.0


def schedule(timesteps):
    betas = jnp.minimum(jnp.linspace(1e-4, 0.02, timesteps) * (1000 / timesteps), 0.999)
    return jnp.cumprod(1.0 - betas)


def loss(output, x0, noise, alpha_bar):
    snr = alpha_bar / (1.0 - alpha_bar)
    return jnp.minimum(snr, GAMMA) / snr * jnp.sum((output - noise) ** 2, axis=-1)


def sampler(alpha_bar):
    alpha_bar_prev = jnp.concatenate([jnp.ones(1), alpha_bar[:-1]])
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha
    a = 1.0 / jnp.sqrt(alpha)
    b = -beta / (jnp.sqrt(alpha) * jnp.sqrt(1.0 - alpha_bar))
    c = jnp.sqrt(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
    tau = jnp.arange(1, alpha_bar.shape[0] + 1) / alpha_bar.shape[0]
    return tau[::-1], a[::-1], b[::-1], c[::-1]

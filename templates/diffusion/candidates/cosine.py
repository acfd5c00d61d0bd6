"""DDPM with the cosine noise schedule (Nichol & Dhariwal, 2021).

alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) * pi / 2), s = 0.008, with each
beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} clipped at 0.999. It destroys information more evenly
over the steps than the linear schedule, which spends its last steps on almost pure noise.
Loss and sampler are the baseline's: noise prediction, unweighted, ancestral sampling over all T steps.
"""

import jax.numpy as jnp


def schedule(timesteps):
    s = 0.008
    t = jnp.arange(timesteps + 1) / timesteps
    f = jnp.cos((t + s) / (1 + s) * jnp.pi / 2) ** 2
    betas = jnp.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    return jnp.cumprod(1.0 - betas)


def loss(output, x0, noise, alpha_bar):
    return jnp.sum((output - noise) ** 2, axis=-1)


def sampler(alpha_bar):
    alpha_bar_prev = jnp.concatenate([jnp.ones(1), alpha_bar[:-1]])
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha
    a = 1.0 / jnp.sqrt(alpha)
    b = -beta / (jnp.sqrt(alpha) * jnp.sqrt(1.0 - alpha_bar))
    c = jnp.sqrt(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
    tau = jnp.arange(1, alpha_bar.shape[0] + 1) / alpha_bar.shape[0]
    return tau[::-1], a[::-1], b[::-1], c[::-1]

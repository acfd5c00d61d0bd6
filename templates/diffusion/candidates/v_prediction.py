"""DDPM with v-prediction (Salimans & Ho, 2022).

The network predicts v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * x0 instead of the noise.
The squared error on v equals the noise-prediction error weighted by 1 + SNR, so the low-noise
levels count more; near pure noise, predicting v (about -x0) stays well posed where predicting the
noise from almost only noise is trivial. The sampler turns v back into the noise estimate,
eps = sqrt(1 - alpha_bar) * x_t + sqrt(alpha_bar) * v, inside the baseline's ancestral update;
the schedule is the baseline's.
"""

import jax.numpy as jnp


def schedule(timesteps):
    betas = jnp.minimum(jnp.linspace(1e-4, 0.02, timesteps) * (1000 / timesteps), 0.999)
    return jnp.cumprod(1.0 - betas)


def loss(output, x0, noise, alpha_bar):
    ab = alpha_bar[:, None]
    v = jnp.sqrt(ab) * noise - jnp.sqrt(1.0 - ab) * x0
    return jnp.sum((output - v) ** 2, axis=-1)


def sampler(alpha_bar):
    alpha_bar_prev = jnp.concatenate([jnp.ones(1), alpha_bar[:-1]])
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha
    # The ancestral update (x - beta / sqrt(1 - alpha_bar) * eps) / sqrt(alpha) with eps written in v:
    # the x coefficient becomes (1 - beta) / sqrt(alpha) = sqrt(alpha).
    a = jnp.sqrt(alpha)
    b = -beta * jnp.sqrt(alpha_bar) / (jnp.sqrt(alpha) * jnp.sqrt(1.0 - alpha_bar))
    c = jnp.sqrt(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
    tau = jnp.arange(1, alpha_bar.shape[0] + 1) / alpha_bar.shape[0]
    return tau[::-1], a[::-1], b[::-1], c[::-1]

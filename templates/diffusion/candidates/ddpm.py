"""The editable module of the diffusion template: a DDPM recipe in three functions.

    schedule(timesteps)                 -> alpha_bar, shape [T]
    loss(output, x0, noise, alpha_bar)  -> one loss per example, shape [B]
    sampler(alpha_bar)                  -> (tau, a, b, c), four arrays of shape [K]

Training (fixed harness): for clean 2D points x0 [B, 2], noise levels i uniform in
0..T-1 and noise [B, 2] ~ N(0, I), the network sees
x_t = sqrt(alpha_bar[i]) * x0 + sqrt(1 - alpha_bar[i]) * noise and the time
tau_i = (i + 1) / T, and is trained to minimise mean(loss(output, x0, noise,
alpha_bar[i])), where output [B, 2] is its prediction. What it predicts (the noise,
x0, v, ...) and how levels are weighted is up to `loss`.

Sampling (run by the sealed evaluator from the table that `sampler` returns, with
its own noise): x ~ N(0, I); then for k = 0..K-1,
    x = a[k] * x + b[k] * f(x, tau[k]) + c[k] * z_k,   z_k ~ N(0, I),
where f is the trained network; the final x is the sample. tau must lie in [0, 1]
and K in 1..config.max_sampler_steps. The table must match what the network was
trained to predict.

Write everything in jax.numpy; the values must be finite, and alpha_bar must lie in
(0, 1). This file as shipped is DDPM (Ho et al., 2020), the template's baseline: a
linear beta schedule, noise prediction with an unweighted squared error, and
ancestral sampling over all T steps with the posterior variance.
"""

import jax.numpy as jnp


def schedule(timesteps):
    # Betas from 1e-4 to 0.02 at T = 1000, rescaled so that other T reach the same final noise level
    # (and capped below 1, where a very small T would otherwise destroy the signal in one step).
    betas = jnp.minimum(jnp.linspace(1e-4, 0.02, timesteps) * (1000 / timesteps), 0.999)
    return jnp.cumprod(1.0 - betas)


def loss(output, x0, noise, alpha_bar):
    return jnp.sum((output - noise) ** 2, axis=-1)


def sampler(alpha_bar):
    alpha_bar_prev = jnp.concatenate([jnp.ones(1), alpha_bar[:-1]])
    alpha = alpha_bar / alpha_bar_prev
    beta = 1.0 - alpha
    # x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t) + sigma_t * z.
    a = 1.0 / jnp.sqrt(alpha)
    b = -beta / (jnp.sqrt(alpha) * jnp.sqrt(1.0 - alpha_bar))
    c = jnp.sqrt(beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar))  # posterior std; 0 at the last step
    tau = jnp.arange(1, alpha_bar.shape[0] + 1) / alpha_bar.shape[0]
    # From the noisiest level down to the cleanest.
    return tau[::-1], a[::-1], b[::-1], c[::-1]

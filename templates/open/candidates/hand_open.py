"""A hand-written rule over OPEN's features: Adam's direction, with step sizes and noise set by the features.

- train_frac: the learning rate is annealed linearly to 0 (as for Adam);
- batch_frac: larger steps on the fresh data at the start of each PPO update's epochs, smaller ones as the
  policy drifts from the one that collected the data (scale 1.25 at batch_frac 0 to 0.75 at 1, mean 1);
- dormancy: neurons whose mean |activation| is under a tenth of their layer's mean (near-dead, the plasticity
  loss OPEN targets) take 3x larger steps, to be pulled back into use;
- is_actor, noise: parameter-space exploration noise on the policy only, a tenth of the step size and
  annealed with it (a random walk of about 0.02 per weight over training at the tuned learning rate).
"""

import jax.numpy as jnp

LR = 8e-3  # the tuned Adam learning rate
B1, B2, EPS = 2, 4, 1e-5  # indices of the decays 0.9 and 0.999
BATCH_SLOPE, DORMANT_THRESHOLD, DORMANT_BOOST, NOISE = 0.5, 0.1, 2.0, 0.1


def update(f):
    m_hat = f.momentum[..., B1] / (1.0 - 0.9**f.step)
    v_hat = f.sq_momentum[..., B2] / (1.0 - 0.999**f.step)
    direction = m_hat / (jnp.sqrt(v_hat) + EPS)
    lr = LR * (1.0 - f.train_frac)
    lr = lr * (1.0 + BATCH_SLOPE * (0.5 - f.batch_frac))
    lr = lr * (1.0 + DORMANT_BOOST * (f.dormancy < DORMANT_THRESHOLD))
    return -lr * direction + NOISE * lr * f.is_actor * f.noise

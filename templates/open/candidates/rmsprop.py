"""RMSprop (Tieleman and Hinton, 2012) as PyTorch defines it: g / (sqrt(v) + eps), v the EMA of g^2 at decay 0.99.

No momentum and no bias correction (v starts at 0, so the first steps are up to 10x larger, as in
PyTorch and optax); learning rate annealed linearly to 0.
"""

import jax.numpy as jnp

LR = 1e-3  # the best of a sweep over 5e-4 ... 4e-3 on Breakout-MinAtar (README.md)
B2, EPS = 3, 1e-5  # index of the decay 0.99


def update(f):
    return -LR * (1.0 - f.train_frac) * f.grad / (jnp.sqrt(f.sq_momentum[..., B2]) + EPS)

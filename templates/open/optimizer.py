"""The editable module of the OPEN template: an optimizer's update rule over OPEN's input features.

`update(f)` is called for every parameter tensor of the PPO actor-critic at every minibatch
step and returns the update to ADD to the parameter (same shape as f.param). `f` holds, each
float32 of the parameter's shape: param, grad, momentum and sq_momentum ([..., 6]: EMAs of g
and g^2 at decays 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, started at 0, not bias-corrected),
step (1, 2, ...), train_frac, batch_frac, layer_frac, dormancy, is_actor and noise (N(0, 1)).
Write it in jax.numpy; it must be jittable and return finite values.

This file as shipped is Adam (beta1 = 0.9, beta2 = 0.999, eps = 1e-5) with PureJaxRL's linear
learning-rate annealing and a tuned learning rate: the template's baseline.
"""

import jax.numpy as jnp

LR = 8e-3  # tuned on Breakout-MinAtar: the best of a sweep over 2.5e-4 ... 1.6e-2 (README.md)
B1, B2, EPS = 2, 4, 1e-5  # indices of the decays 0.9 and 0.999


def update(f):
    m_hat = f.momentum[..., B1] / (1.0 - 0.9**f.step)
    v_hat = f.sq_momentum[..., B2] / (1.0 - 0.999**f.step)
    lr = LR * (1.0 - f.train_frac)
    return -lr * m_hat / (jnp.sqrt(v_hat) + EPS)

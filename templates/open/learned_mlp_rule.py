"""A small learned optimizer over OPEN's features: an MLP that modulates the tuned Adam per parameter.

The template's earlier learned rule, kept as an option (meta_es.py --rule adam_mlp); OPEN's own GRU
optimizer is learned_rule.py, meta_es.py's default. For each parameter the MLP reads OPEN's inputs,
preprocessed as OPEN does: sign and log-magnitude of the gradient and of each momentum, and the
parameter value, each normalised by its RMS over the tensor; then the training, batch and layer
proportions, the dormancy and the actor flag. It outputs (a, b, c):

    update = -lr_t * (adam_direction * exp(a) + b) + lr_t * c * is_actor * noise,   lr_t = LR * (1 - train_frac)

so a scales Adam's step, b adds a learned direction and c sets the policy's exploration noise (OPEN's
stochastic output). With WEIGHTS = None, or an all-zero output layer, this is exactly the tuned Adam.
meta_es.py --rule adam_mlp meta-trains WEIGHTS with evolution strategies and writes a copy of this file
with them filled in: a candidate optimizer.py like any other. Unlike OPEN's optimizer it has no recurrent
state and no zero-mean step, starts at Adam rather than at zero, and reads the actor flag as an input.
"""

import jax
import jax.numpy as jnp

LR = 8e-3  # the tuned Adam learning rate
B1, B2, EPS = 2, 4, 1e-5  # Adam's decays 0.9 and 0.999 (indices into the feature decays)
LOG_EPS = 1e-8

WEIGHTS = None


def inputs(f):
    """[*param.shape, 20] MLP inputs: 15 RMS-normalised gradient/momentum/parameter features and 5 proportions."""
    g, m = f.grad[..., None], f.momentum
    raw = jnp.concatenate([f.param[..., None], jnp.sign(g), jnp.log(jnp.abs(g) + LOG_EPS), jnp.sign(m),
                           jnp.log(jnp.abs(m) + LOG_EPS)], axis=-1)
    axes = tuple(range(raw.ndim - 1))
    raw = raw * jax.lax.rsqrt(jnp.mean(raw**2, axis=axes, keepdims=True) + 1e-5)
    props = jnp.stack([f.train_frac, f.batch_frac, f.layer_frac, f.dormancy, f.is_actor], axis=-1)
    return jnp.concatenate([raw, props], axis=-1)


def mlp(weights, x):
    """Two ReLU hidden layers, three outputs per parameter."""
    h = jax.nn.relu(x @ weights["w0"] + weights["b0"])
    h = jax.nn.relu(h @ weights["w1"] + weights["b1"])
    return h @ weights["w2"] + weights["b2"]


def init_weights(key, hidden: int = 16) -> dict:
    """Random hidden layers and a zero output layer: the learned rule starts as the tuned Adam."""
    k0, k1 = jax.random.split(key)
    n_in = 20
    glorot = jax.nn.initializers.glorot_normal()
    return {"w0": glorot(k0, (n_in, hidden)), "b0": jnp.zeros(hidden), "w1": glorot(k1, (hidden, hidden)),
            "b1": jnp.zeros(hidden), "w2": jnp.zeros((hidden, 3)), "b2": jnp.zeros(3)}


def learned_update(weights, f):
    """The update for one tensor under MLP weights `weights`."""
    m_hat = f.momentum[..., B1] / (1.0 - 0.9**f.step)
    v_hat = f.sq_momentum[..., B2] / (1.0 - 0.999**f.step)
    direction = m_hat / (jnp.sqrt(v_hat) + EPS)
    lr = LR * (1.0 - f.train_frac)
    if weights is None:
        return -lr * direction
    out = mlp(weights, inputs(f))
    # The exponent is clipped so that no weights can overflow the step: at most e^3 times Adam's.
    scale = jnp.exp(jnp.clip(out[..., 0], -3.0, 3.0))
    return -lr * (direction * scale + out[..., 1]) + lr * out[..., 2] * f.is_actor * f.noise


def update(f):
    weights = None if WEIGHTS is None else {k: jnp.asarray(v, jnp.float32) for k, v in WEIGHTS.items()}
    return learned_update(weights, f)

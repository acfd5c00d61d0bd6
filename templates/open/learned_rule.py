"""OPEN's learned optimizer (Goldie et al., 2024), as its code defines it: a per-parameter GRU, then an MLP.

Transcribed from rl_optimizer/network.py (class GRU_Opt) of github.com/AlexGoldie/rl-learned-optimization,
commit b65037bd89c09f31e80c5d49f1d78cc9c6dc43e0 (tests/test_open_fidelity.py checks it against flax's own
GRUCell and Sequential on the same weights):

- inputs, 19 per parameter: the parameter, sign and log(|m| + 1e-13) of its momenta at decays 0.1 ... 0.9999,
  sign and log(|g| + 1e-13) of its gradient (these 15 divided by their RMS over the tensor, eps 1e-5), then
  the training proportion, layer proportion, batch proportion and dormancy;
- a GRU cell of GRU_FEATURES = 8 units (flax.linen.GRUCell; its state, per parameter, carried across steps
  from zeros), then Dense(16), LayerNorm, ReLU, Dense(16), LayerNorm, ReLU, Dense(3) -> o0, o1, o2;
- OPEN's step, subtracted from the parameter: o0 * 1e-3 * exp(o1 * 1e-3) + o2 * is_actor * noise * 1e-3, made
  zero-mean over all parameters of actor and critic (ZERO_MEAN: the harness does that, it sees every tensor).

update(f) returns (the update to ADD, that is minus OPEN's step, and the new GRU state). The weights are in
flax's own layout ({"params": Sequential's, "gru_params": GRUCell's}); ravelled with
jax.flatten_util.ravel_pytree they are OPEN's flat meta-parameter vector (1211 numbers at 16 and 8), so
OPEN's published .npy files load with meta_es.py --from-upstream. WEIGHTS = None means all zeros, OPEN's
starting point for meta-training: a zero step. meta_es.py fills WEIGHTS in.
"""

import jax
import jax.numpy as jnp

HIDDEN, GRU_FEATURES = 16, 8
N_INPUTS = 19
CARRY = GRU_FEATURES  # the harness keeps this many floats of recurrent state per parameter (f.carry)
ZERO_MEAN = True      # the harness makes the update zero-mean over all parameters
STEP_MULT, EXP_MULT = 1e-3, 1e-3
LOG_EPS, NORM_EPS, LN_EPS = 1e-13, 1e-5, 1e-6  # OPEN's eps1, its _second_moment_normalizer's eps; flax LayerNorm's

WEIGHTS = None


def shapes(hidden: int = HIDDEN, gru: int = GRU_FEATURES) -> dict:
    """The weight tree's shapes, named as flax's GRUCell and Sequential name them."""
    dense = lambda n_in, n_out: {"kernel": (n_in, n_out), "bias": (n_out,)}  # noqa: E731
    norm = {"scale": (hidden,), "bias": (hidden,)}
    return {
        "gru_params": {"params": {"ir": dense(N_INPUTS, gru), "iz": dense(N_INPUTS, gru), "in": dense(N_INPUTS, gru),
                                  "hr": {"kernel": (gru, gru)}, "hz": {"kernel": (gru, gru)}, "hn": dense(gru, gru)}},
        "params": {"params": {"layers_0": dense(gru, hidden), "layers_1": norm, "layers_3": dense(hidden, hidden),
                              "layers_4": norm, "layers_6": dense(hidden, 3)}},
    }


def zero_weights(hidden: int = HIDDEN, gru: int = GRU_FEATURES) -> dict:
    """All-zero weights: where OPEN starts meta-training (train.py zeroes GRU_Opt.init's output)."""
    return jax.tree.map(lambda s: jnp.zeros(s, jnp.float32), shapes(hidden, gru),
                        is_leaf=lambda x: isinstance(x, tuple))


def inputs(f):
    """[*param.shape, 19]: OPEN's 15 RMS-normalised inputs, then its 4 proportions (network.py's order)."""
    g = f.grad[..., None]
    raw = jnp.concatenate([f.param[..., None], jnp.sign(f.momentum), jnp.log(jnp.abs(f.momentum) + LOG_EPS),
                           jnp.sign(g), jnp.log(jnp.abs(g) + LOG_EPS)], axis=-1)
    axes = tuple(range(raw.ndim - 1))
    raw = raw * jax.lax.rsqrt(NORM_EPS + jnp.mean(raw**2, axis=axes, keepdims=True))
    props = jnp.stack([f.train_frac, f.layer_frac, f.batch_frac, f.dormancy], axis=-1)
    return jnp.concatenate([raw, props], axis=-1)


def _dense(p, x):
    return x @ p["kernel"] + p["bias"]


def _layer_norm(p, x):
    mean = x.mean(-1, keepdims=True)
    var = jnp.maximum((x * x).mean(-1, keepdims=True) - mean * mean, 0.0)  # flax's fast variance
    return (x - mean) * jax.lax.rsqrt(var + LN_EPS) * p["scale"] + p["bias"]


def gru_cell(p, h, x):
    """flax.linen.GRUCell: r, z gates; n = tanh(W_in x + r * (W_hn h + b_hn)); h' = (1 - z) n + z h."""
    r = jax.nn.sigmoid(_dense(p["ir"], x) + h @ p["hr"]["kernel"])
    z = jax.nn.sigmoid(_dense(p["iz"], x) + h @ p["hz"]["kernel"])
    n = jnp.tanh(_dense(p["in"], x) + r * _dense(p["hn"], h))
    return (1.0 - z) * n + z * h


def mlp(p, h):
    """nn.Sequential([Dense, LayerNorm, relu, Dense, LayerNorm, relu, Dense(3)])."""
    h = jax.nn.relu(_layer_norm(p["layers_1"], _dense(p["layers_0"], h)))
    h = jax.nn.relu(_layer_norm(p["layers_4"], _dense(p["layers_3"], h)))
    return _dense(p["layers_6"], h)


def learned_update(weights, f):
    """(update to add, new carry) for one tensor: minus OPEN's step (before the harness makes it zero-mean)."""
    carry = gru_cell(weights["gru_params"]["params"], f.carry, inputs(f))
    out = mlp(weights["params"]["params"], carry)
    step = out[..., 0] * STEP_MULT * jnp.exp(out[..., 1] * EXP_MULT)
    step = step + out[..., 2] * f.is_actor * f.noise * STEP_MULT  # exploration noise on the policy only
    return -step, carry


def _as_arrays(tree):
    if isinstance(tree, dict):
        return {k: _as_arrays(v) for k, v in tree.items()}
    return jnp.asarray(tree, jnp.float32)


def update(f):
    weights = zero_weights() if WEIGHTS is None else _as_arrays(WEIGHTS)
    return learned_update(weights, f)

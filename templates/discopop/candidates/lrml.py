"""DiscoPOP's LRML (Lu et al., 2024): a log-ratio-modulated blend of logistic and exponential losses.

z = beta * rho, w = sigmoid(z / tau) with tau = 0.05, loss = (1 - w) * (-log sigmoid z) + w * exp(-z).
Note that its gradient at z = 0 has the opposite sign to DPO's.
"""

import jax
import jax.numpy as jnp

TAU = 0.05


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    z = beta * rho
    w = jax.nn.sigmoid(z / TAU)
    # Where z is very negative, w is exactly 0 and exp(-z) overflows: 0 * inf would be NaN.
    # Clipping the exponent there changes nothing the loss can express.
    exponential = jnp.exp(-jnp.maximum(z, -50.0))
    return (1.0 - w) * -jax.nn.log_sigmoid(z) + w * exponential

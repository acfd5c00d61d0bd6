"""Paired KTO (Ethayarajh et al., 2024), as TRL's `kto_pair` and the DiscoPOP repository's `gpo.py`.

Each pair contributes a desirable (chosen) and an undesirable (rejected) term,
measured against a KL reference point: the batch mean of the policy/reference
log-ratio, clipped at zero. As upstream, the gradient flows through the reference
point too, and the loss is the mean over the 2N terms (hence the halving: one value
per pair whose batch mean is upstream's).
"""

import jax
import jax.numpy as jnp


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    chosen_kl = jnp.maximum(jnp.mean(chosen_logratios), 0.0)
    rejected_kl = jnp.maximum(jnp.mean(rejected_logratios), 0.0)
    desirable = 1.0 - jax.nn.sigmoid(beta * (chosen_logratios - rejected_kl))
    undesirable = 1.0 - jax.nn.sigmoid(beta * (chosen_kl - rejected_logratios))
    return (desirable + undesirable) / 2.0

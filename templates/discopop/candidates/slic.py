"""SLiC-HF (Zhao et al., 2023): hinge loss on the beta-scaled log-ratio margin."""

import jax


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return jax.nn.relu(1.0 - beta * rho)

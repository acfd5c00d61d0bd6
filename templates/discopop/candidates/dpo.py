"""The editable module of the DiscoPOP template: an offline preference loss.

Replace the body of `loss` with any differentiable expression. It receives the
log-probabilities of the chosen and rejected responses under the policy being
trained and under the frozen reference policy (each an array of shape [N]),
plus the regularisation strength `beta`, and returns one loss per example
(shape [N]). Lower is better for the optimiser; the harness averages it.

This file as shipped is DPO (Rafailov et al., 2023), the template's baseline.
"""

import jax


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -jax.nn.log_sigmoid(beta * rho)

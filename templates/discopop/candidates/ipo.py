"""IPO (Azar et al., 2023): squared regression of the log-ratio margin onto 1/(2 beta)."""


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return (rho - 1.0 / (2.0 * beta)) ** 2

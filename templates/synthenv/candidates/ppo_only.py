"""The editable module of the synthenv template: a synthetic contextual bandit and how it is meta-trained.

The harness meta-trains a bandit whose contexts imitate the real environment's observations (Acrobot-v1) so that
agents trained on the bandit alone act well in the real environment: SNES perturbs the bandit's parameters, trains
one agent per perturbation on the bandit (PPO or DQN at hyperparameters sample_hparams draws), plays its greedy
policy in the real environment for horizon(generation) steps, and steps its mean and std with the weights shape
makes of those returns. The evaluator then trains fresh agents on the final bandit with PPO and a held-out
algorithm (REINFORCE) at its own private hyperparameter draws and scores their greedy return on the real
environment.

The bandit is a fixed family (jax_workloads.synthenv: the context is an MLP of a latent draw, the reward an MLP of
context and one-hot action, upstream's SynthEnvMLP); LATENT, HIDDEN and ACTIVATION choose its member. The harness
owns the bandit's parameters: it initialises them (flax's default), samples the population (mean + std * z, its
own draws) and takes every SNES step (mean += LR_MEAN * std * (w @ z), std *= exp(lr_std / 2 * w @ (z**2 - 1)),
std starting at SIGMA_INIT). SIGMA_INIT must lie in [0.005, 0.5] and LR_MEAN in [0.1, 2]. Required:

- shape(fitness [P], generation) -> weights [P]: the fitness shaping. fitness is the population's real returns
  sorted best first, weights[i] the weight of the i-th best member (members that tie get the weight of their
  group's first place). The harness refuses non-finite weights and rescales any whose sum of |w| exceeds 2.
- sample_hparams(key, generation) -> [7] hyperparameters of one inner agent (lr, gamma, gae_lambda, clip_eps,
  ent_coef, vf_coef for PPO; lr and eps_end for DQN); the harness clips them into synthenv.BOUNDS.
- horizon(generation) -> the real-environment steps a fitness episode may last (clipped to [1, max_horizon]).
Keys are raw uint32[2] key data (jax.random.wrap_key_data); generation is an int32 scalar.

This bandit: normal latent, 32 relu, ppo, sampled hparams, SNES sigma 0.05 lr 1, horizon 500.
"""

import jax
import jax.numpy as jnp
import jax.scipy.stats  # noqa: F401 - rankdata

LATENT = "normal"  # the latent distribution: "normal", "uniform", "categorical" or "softmax" (upstream's options)
HIDDEN = 32  # hidden units of the context MLP and of the reward MLP
ACTIVATION = "relu"  # their hidden activation: "relu" or "tanh"
ALGORITHMS = ("ppo",)  # inner algorithms, one per generation in turn ("ppo", "dqn")
SIGMA_INIT = 0.05  # SNES's initial standard deviation, in [0.005, 0.5]
LR_MEAN = 1.0  # SNES's learning rate of the mean, in [0.1, 2] (evosax: sgd at 1.0)
SAMPLE_HPARAMS = True  # draw each inner agent's hyperparameters from upstream's lists; else FIXED_HPARAMS
HPARAM_GRID = (
    (0.01, 0.005, 0.001, 0.0005, 0.0001),  # lr
    (1.0, 0.99, 0.95, 0.9, 0.8),  # gamma
    (1.0, 0.95, 0.9, 0.8, 0.5),  # gae_lambda
    (0.1, 0.2, 0.3, 0.4, 0.5),  # clip_eps
    (0.0, 0.01, 0.05, 0.1, 0.5),  # ent_coef
    (0.0, 0.5, 1.0, 1.5, 2.0),  # vf_coef
    (0.01, 0.05, 0.1, 0.2),  # eps_end (DQN's final exploration rate; DQN's learning rate is lr)
)
FIXED_HPARAMS = (0.001, 0.99, 0.95, 0.2, 0.01, 0.5, 0.05)
# The evaluation-horizon schedule (upstream's eval_config, optax.linear_schedule(init, end, steps, begin)).
HORIZON_INIT = 500
HORIZON_END = 500
HORIZON_BEGIN = 0
HORIZON_STEPS = 1


def shape(fitness, generation):
    """SNES's utilities (evosax 0.3 get_weights): log-rank weights summing to 0, the best member first."""
    n = fitness.shape[0]
    w = jnp.clip(jnp.log(n / 2 + 1) - jnp.log(jnp.arange(1, n + 1)), min=0.0)
    w = w / w.sum() - 1 / n
    # evosax ranks what it minimises (here -fitness) with average ranks for ties, truncated to an index
    ranks = (jax.scipy.stats.rankdata(-fitness) - 1).astype(jnp.int32)
    return w[ranks]


def sample_hparams(key, generation):
    if not SAMPLE_HPARAMS:
        return jnp.asarray(FIXED_HPARAMS, jnp.float32)
    keys = jax.random.split(jax.random.wrap_key_data(key), len(HPARAM_GRID))
    return jnp.stack([jnp.asarray(v, jnp.float32)[jax.random.randint(k, (), 0, len(v))]
                      for k, v in zip(keys, HPARAM_GRID, strict=True)])


def horizon(generation):
    frac = jnp.clip((generation - HORIZON_BEGIN) / HORIZON_STEPS, 0.0, 1.0)
    return HORIZON_INIT + frac * (HORIZON_END - HORIZON_INIT)

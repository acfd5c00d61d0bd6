"""The editable module of the kinetix template: the agent, i.e. its network and its PPO objective.

The harness trains this agent with Kinetix's PPO (jax_workloads/ppo.py, PureJaxRL style) on random variants of
Kinetix's handmade s-size levels and exports its greedy policy; a sealed evaluator measures the solve
rate on variants it draws itself. Three names are required:

- CONTINUOUS: False for Kinetix's 11 discrete actions (one motor direction, one thruster, or nothing),
  True for its 6 continuous ones (4 motor colours in [-1, 1], 2 thruster colours in [0, 1]).
- make_network(num_actions, action_dim) -> a flax module. Called on flat observations [..., obs_size]
  it returns (policy_out, value [...]): policy_out is the action logits [..., num_actions] when
  discrete, or (mean, log_std), each [..., action_dim], when continuous. Training samples from that
  categorical or diagonal Gaussian (ppo.sample_action); the evaluator plays its argmax or its mean.
- loss(params, apply_fn, batch, config, discrete) -> (scalar, dict of scalar diagnostics), minimised
  by Adam on each minibatch; batch is a ppo.Batch (obs, action, log_prob, value, advantage, target).

The constants below are the knobs the LLM-free proposer turns (search_space.py); any code may change.
This agent: discrete, tanh towers 5x128 + LayerNorm, policy init 0.01, ent 0.01, vf 0.5, clip 0.2, value clip.
"""

import math

import flax.linen as nn
import jax.numpy as jnp

from jax_workloads.ppo import entropy, log_prob

CONTINUOUS = False  # action head: Kinetix's 11 discrete actions, or its 6 continuous ones
HIDDEN = 128  # width of the shared embedding and of every tower layer
LAYERS = 5  # hidden layers of the actor tower and of the critic tower
ACTIVATION = "tanh"  # the towers' activation: "tanh", "relu" or "gelu"
LAYER_NORM = True  # LayerNorm before each tower activation
POLICY_INIT_SCALE = 0.01  # init scale of the policy head: small starts near uniform
ENT_COEF = 0.01  # entropy bonus
VF_COEF = 0.5  # value-loss weight
CLIP_EPS = 0.2  # PPO's ratio clip (and the value clip's width)
CLIP_VALUE = True  # clip the value update around the rollout's estimate, as PPO's reference code does

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}


class ActorCritic(nn.Module):
    """A shared ReLU embedding of the flat symbolic observation, then separate actor and critic towers."""

    num_actions: int
    action_dim: int = 0

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[ACTIVATION]
        init = nn.initializers.orthogonal
        x = nn.relu(nn.Dense(HIDDEN, kernel_init=init(math.sqrt(2)))(x))  # the embedding both towers share

        def mlp(h, out, scale):
            for _ in range(LAYERS):
                h = nn.Dense(HIDDEN, kernel_init=init(math.sqrt(2)))(h)
                if LAYER_NORM:
                    h = nn.LayerNorm()(h)
                h = act(h)
            return nn.Dense(out, kernel_init=init(scale))(h)

        value = mlp(x, 1, 1.0)[..., 0]
        if self.num_actions:
            return mlp(x, self.num_actions, POLICY_INIT_SCALE), value
        mean = mlp(x, self.action_dim, POLICY_INIT_SCALE)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        return (mean, jnp.broadcast_to(log_std, mean.shape)), value


def make_network(num_actions, action_dim):
    return ActorCritic(num_actions, action_dim)


def loss(params, apply_fn, batch, config, discrete):
    policy_out, value = apply_fn(params, batch.obs)
    value_loss = (value - batch.target) ** 2
    if CLIP_VALUE:
        value_clipped = batch.value + jnp.clip(value - batch.value, -CLIP_EPS, CLIP_EPS)
        value_loss = jnp.maximum(value_loss, (value_clipped - batch.target) ** 2)
    value_loss = 0.5 * value_loss.mean()
    # Clipped surrogate objective on per-minibatch normalised advantages.
    ratio = jnp.exp(log_prob(policy_out, batch.action, discrete) - batch.log_prob)
    adv = (batch.advantage - batch.advantage.mean()) / (batch.advantage.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - CLIP_EPS, 1 + CLIP_EPS) * adv).mean()
    ent = entropy(policy_out, discrete).mean()
    total = actor_loss + VF_COEF * value_loss - ENT_COEF * ent
    return total, {"value_loss": value_loss, "actor_loss": actor_loss, "entropy": ent}

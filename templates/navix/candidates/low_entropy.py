"""The editable module of the navix template: the agent, i.e. its network and its PPO objective.

The harness trains this agent with PPO (jax_workloads/ppo.py, PureJaxRL style, NAVIX's PPO settings) on each
NAVIX gridworld of the suite (MiniGrid in JAX), one policy per environment and seed, and exports its
policies (their logits); a sealed evaluator samples their actions and measures how often they reach the goal
on layouts it draws itself. Two names are required (CONTINUOUS, if defined, must be False: MiniGrid's 7
actions are discrete):

- make_network(num_actions, action_dim) -> a flax module. Called on flat symbolic observations [..., obs_size]
  (NAVIX's fully observed grid of (object, colour, state) triples, H x W x 3 flattened, small integers as
  float32) it returns (logits [..., num_actions], value [...]). Training samples from the categorical
  (ppo.sample_action); the evaluator plays its argmax. obs_size differs between environments: the module is
  traced once per environment.
- loss(params, apply_fn, batch, config, discrete) -> (scalar, dict of scalar diagnostics), minimised
  by Adam on each minibatch; batch is a ppo.Batch (obs, action, log_prob, value, advantage, target).

The constants below are the knobs the LLM-free proposer turns (search_space.py); any code may change.
This agent: separate tanh MLPs 2x64, policy init 0.01, ent 0.001, vf 0.5, clip 0.2, navix value loss.
"""

import flax.linen as nn
import jax.numpy as jnp

from jax_workloads.ppo import entropy, log_prob

HIDDEN = 64  # width of every hidden layer of both MLPs
LAYERS = 2  # hidden layers of the actor MLP and of the critic MLP
ACTIVATION = "tanh"  # the hidden activation: "tanh", "relu" or "gelu"
LAYER_NORM = False  # LayerNorm before each hidden activation
SHARED_TORSO = False  # one MLP for actor and critic (two heads) instead of two separate MLPs
POLICY_INIT_SCALE = 0.01  # orthogonal init scale of the policy head: small starts near uniform
ENT_COEF = 0.001  # entropy bonus
VF_COEF = 0.5  # value-loss weight
CLIP_EPS = 0.2  # PPO's ratio clip (and the value clip's width)
# "navix": NAVIX's clipped value loss, 0.5 * max((v - R)^2, 0.5 * (v_clip - R)^2); "clipped": PPO's reference
# 0.5 * max((v - R)^2, (v_clip - R)^2); "mse": 0.5 * (v - R)^2; "huber": optax-style Huber (delta 1) on v - R.
VALUE_LOSS = "navix"
NORMALISE_ADVANTAGE = True  # normalise advantages per minibatch (NAVIX's normalise_advantage)

_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "gelu": nn.gelu}


class ActorCritic(nn.Module):
    """NAVIX's actor-critic: an MLP encoder and a linear head for the policy, another pair for the value."""

    num_actions: int

    @nn.compact
    def __call__(self, x):
        act = _ACTIVATIONS[ACTIVATION]

        def encoder(h):
            for _ in range(LAYERS):
                h = nn.Dense(HIDDEN)(h)
                if LAYER_NORM:
                    h = nn.LayerNorm()(h)
                h = act(h)
            return h

        actor = encoder(x)
        critic = actor if SHARED_TORSO else encoder(x)
        logits = nn.Dense(self.num_actions, kernel_init=nn.initializers.orthogonal(POLICY_INIT_SCALE))(actor)
        value = nn.Dense(1, kernel_init=nn.initializers.orthogonal(1.0))(critic)
        return logits, value[..., 0]


def make_network(num_actions, action_dim):
    return ActorCritic(num_actions)


def _value_loss(value, batch):
    err = value - batch.target
    clipped = batch.value + jnp.clip(value - batch.value, -CLIP_EPS, CLIP_EPS) - batch.target
    if VALUE_LOSS == "navix":
        return 0.5 * jnp.maximum(err**2, 0.5 * clipped**2).mean()
    if VALUE_LOSS == "clipped":
        return 0.5 * jnp.maximum(err**2, clipped**2).mean()
    if VALUE_LOSS == "huber":
        a = jnp.abs(err)
        return jnp.where(a <= 1.0, 0.5 * err**2, a - 0.5).mean()
    return 0.5 * (err**2).mean()


def loss(params, apply_fn, batch, config, discrete):
    logits, value = apply_fn(params, batch.obs)
    value_loss = _value_loss(value, batch)
    # Clipped surrogate objective.
    ratio = jnp.exp(log_prob(logits, batch.action, discrete) - batch.log_prob)
    adv = batch.advantage
    if NORMALISE_ADVANTAGE:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    actor_loss = -jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - CLIP_EPS, 1 + CLIP_EPS) * adv).mean()
    ent = entropy(logits, discrete).mean()
    total = actor_loss + VF_COEF * value_loss - ENT_COEF * ent
    return total, {"value_loss": value_loss, "actor_loss": actor_loss, "entropy": ent}

"""Kinetix for the `kinetix` template: level sets, level variants, the sealed policy export and the solve rate.

Three parts, used by both sides of sealed evaluation:

- Levels and variants. Kinetix's handmade levels (JSON files shipped under kinetix/levels/{s,m,l})
  are deterministic: a greedy policy plays the same episode every time. A *variant* of a level
  is the same scene with its physics perturbed (gravity, motor and thruster strength, a common
  initial velocity of the moving bodies), so a level becomes a distribution of episodes and a
  policy is judged on variants it never saw. `make_env` is the training environment (each
  episode: a level drawn uniformly, then a random variant of it).
- The policy export (harness side): the greedy policy of every seed as one `jax.export`
  artifact, serialized StableHLO with no Python in it, next to its parameters as plain arrays.
- The policy import and the solve rate (evaluator side, trusted): deserialize the artifact,
  reject anything but plain computation (sealed.load_export: host callbacks, foreign custom
  calls, effects, infeed/outfeed), check its signature and parameters, and run greedy episodes with the
  evaluator's own environment code on initial states of its choosing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import ppo
from jax_workloads.policy_export import (  # noqa: F401 - the kinetix template's names for them
    CURVE_POINTS,
    EXPORT_FILE,
    PARAMS_FILE,
    ActionSpec,
    curve_indices,
    export_policy,
    init_lapack,
)
from jax_workloads.policy_export import load_policy as _load_policy
from jax_workloads.seeds import typed_seed_key

# The weight of Kinetix's dense reward (the decrease of the distance between the green and blue shapes, per step):
# 0.2 in every env config of Kinetix's experiments (configs/env/*.yaml, `dense_reward_scale`), not EnvParams' 0.1.
DENSE_REWARD_SCALE = 0.2


def level_names(size: str = "s") -> list[str]:
    """The handmade levels Kinetix ships for a size ("s", "m" or "l"), as "s/h0_weak_thrust" etc."""
    import kinetix

    folder = Path(kinetix.__file__).parent / "levels" / size
    if not folder.is_dir():
        raise ValueError(f"Kinetix ships no levels of size {size!r} (sizes: s, m, l)")
    return [f"{size}/{p.stem}" for p in sorted(folder.glob("*.json"))]


def load_levels(names: Sequence[str]):
    """Load handmade levels by name; returns (stacked EnvState with a leading level axis, StaticEnvParams).

    All levels must share one size, so that they share static parameters and one compiled program.
    """
    from kinetix.util.saving import load_evaluation_levels

    names = list(names)
    if not names:
        raise ValueError("no levels given")
    sizes = {n.split("/")[0] for n in names}
    if len(sizes) != 1:
        raise ValueError(f"levels of different sizes cannot be mixed: {sorted(sizes)}")
    known = set(level_names(sizes.pop()))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown Kinetix level {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if len(set(names)) != len(names):
        raise ValueError("a level is listed twice")
    return load_evaluation_levels(names)


@dataclass(frozen=True)
class Variation:
    """How far a variant's physics may stray from its handmade level (0 everywhere: the level itself).

    gravity: relative change of gravity's strength, uniform in [1 - g, 1 + g] (the policy observes gravity).
    actuators: relative change of every motor's speed and power and every thruster's power, each uniform
        in [1 - a, 1 + a].
    velocity: every moving body starts with one common velocity, uniform in [-v, v] m/s per axis
        (common, so jointed bodies stay consistent).
    """

    gravity: float = 0.0
    actuators: float = 0.0
    velocity: float = 0.0

    def __post_init__(self):
        for name in ("gravity", "actuators"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"variation.{name} must be in [0, 1), got {value}")
        if not 0.0 <= self.velocity <= 5.0:
            raise ValueError(f"variation.velocity must be in [0, 5] m/s, got {self.velocity}")


def vary(key: jax.Array, state, variation: Variation):
    """A random variant of one level's initial state (see Variation); jittable and vmappable."""
    kg, km, kp, kt, kv = jax.random.split(key, 5)

    def scale(k, x, a):
        return x * jax.random.uniform(k, jnp.shape(x), minval=1.0 - a, maxval=1.0 + a)

    joint = state.joint.replace(motor_speed=scale(km, state.joint.motor_speed, variation.actuators),
                                motor_power=scale(kp, state.joint.motor_power, variation.actuators))
    thruster = state.thruster.replace(power=scale(kt, state.thruster.power, variation.actuators))
    v0 = jax.random.uniform(kv, (2,), minval=-variation.velocity, maxval=variation.velocity)

    def kick(body):
        # Only moving bodies (finite mass) get the common velocity; the floor and walls stay put.
        moving = (body.inverse_mass > 0) & body.active
        return body.replace(velocity=body.velocity + moving[:, None] * v0)

    return state.replace(gravity=scale(kg, state.gravity, variation.gravity), joint=joint, thruster=thruster,
                         polygon=kick(state.polygon), circle=kick(state.circle))


def variants(key: jax.Array, states, per_level: int, variation: Variation):
    """per_level variants of each level, level-major: [level 0 x per_level, level 1 x per_level, ...]."""
    n = jax.tree.leaves(states)[0].shape[0]
    keys = jax.random.split(key, (n, per_level))
    out = jax.vmap(jax.vmap(lambda k, s: vary(k, s, variation), in_axes=(0, None)))(keys, states)
    return jax.tree.map(lambda x: x.reshape((n * per_level, *x.shape[2:])), out)


def held_out_variants(states, config: dict, private: dict, per_level: int | None = None):
    """The evaluator's held-out variants of `states`, level-major: per_level of each (default: [private]
    episodes_per_level), drawn from [private] eval_seed with the template's [config.variation]."""
    per_level = int(per_level or private["episodes_per_level"])
    return variants(typed_seed_key(private["eval_seed"]), states, per_level, Variation(**config.get("variation", {})))



def _kinetix(static_params, continuous: bool, max_timesteps: int, reset_fn=None, auto_reset: bool = True,
             dense_reward_scale: float = DENSE_REWARD_SCALE):
    from kinetix.environment import ActionType, EnvParams, ObservationType, make_kinetix_env

    env_params = EnvParams(max_timesteps=max_timesteps, dense_reward_scale=dense_reward_scale)
    env = make_kinetix_env(ActionType.CONTINUOUS if continuous else ActionType.DISCRETE,
                           ObservationType.SYMBOLIC_FLAT, reset_fn, env_params, static_params, auto_reset=auto_reset)
    return env, env_params


def make_env(levels: Sequence[str], variation: Variation = Variation(), *, continuous: bool = False,
             max_timesteps: int = 256, dense_reward_scale: float = DENSE_REWARD_SCALE) -> ppo.Env:
    """The training environment: each episode plays a random variant of a level drawn uniformly from `levels`.

    Observations are Kinetix's flat symbolic ones; `solved` is Kinetix's goal signal (GoalR); the reward is
    Kinetix's, its dense part weighted by dense_reward_scale (Kinetix's PPO: 0.2). With the default
    Variation() every episode plays one of the handmade levels exactly.
    """
    states, static_params = load_levels(levels)
    n = len(levels)

    def draw(key):
        k_level, k_vary = jax.random.split(key)
        level = jax.tree.map(lambda x: x[jax.random.randint(k_level, (), 0, n)], states)
        return vary(k_vary, level, variation)

    env, env_params = _kinetix(static_params, continuous, max_timesteps, reset_fn=draw,
                               dense_reward_scale=dense_reward_scale)

    def reset(key):
        obs, state = env.reset(key, env_params)
        return obs.astype(jnp.float32), state

    def step(key, state, action):
        obs, state, reward, done, info = env.step(key, state, action, env_params)
        return obs.astype(jnp.float32), state, reward.astype(jnp.float32), done, info["GoalR"]

    obs_size = int(jax.eval_shape(reset, jax.random.key(0))[0].shape[0])
    space = env.action_space(env_params)
    if continuous:
        return ppo.Env(reset, step, obs_size, 0, int(np.prod(space.shape)), "kinetix")
    return ppo.Env(reset, step, obs_size, int(space.n), 0, "kinetix")


def task_env(config: dict, continuous: bool) -> ppo.Env:
    """The kinetix template's training environment as its public [config] describes it (levels, variation,
    episode limit, dense reward), with the agent's action space; what both its tracer and its harness build.

    Raises ValueError, TypeError or KeyError when [config] describes no such environment.
    """
    return make_env(config["levels"], Variation(**config.get("variation", {})), continuous=continuous,
                    max_timesteps=config["max_timesteps"],
                    dense_reward_scale=config.get("dense_reward_scale", DENSE_REWARD_SCALE))


def action_spec(static_params, continuous: bool, max_timesteps: int = 256) -> ActionSpec:
    """Observation size and action space of Kinetix with these static parameters."""
    env, env_params = _kinetix(static_params, continuous, max_timesteps)
    obs_size = int(env.observation_space(env_params).shape[0])
    space = env.action_space(env_params)
    if continuous:
        return ActionSpec(obs_size, 0, int(np.prod(space.shape)))
    return ActionSpec(obs_size, int(space.n), 0)


def make_solve_rate(static_params, policy: Callable, spec: ActionSpec, seeds: int,
                    max_timesteps: int = 256) -> Callable:
    """Return run(initial_states [E]) -> (solved [S, E], returns [S, E]): one greedy episode per state and seed.

    policy(obs [S, E, obs_size]) -> actions [S, E] (int) or [S, E, action_dim] (float), one set of
    parameters per seed; every seed plays the same E initial states. An episode ends at Kinetix's own
    `done` (goal reached, a red shape touched, or the time limit) and is solved when the goal was
    reached then. A non-finite or out-of-range action ends the episode unsolved: the evaluator never
    repairs a policy's output.
    """
    continuous = spec.num_actions == 0
    env, env_params = _kinetix(static_params, continuous, max_timesteps, auto_reset=False)
    key = jax.random.key(0)  # Kinetix's physics is deterministic; the step's key only feeds auto-reset, off here
    step_all = jax.vmap(jax.vmap(lambda s, a: env.step(key, s, a, env_params)))

    def run(initial_states):
        obs, state = jax.vmap(lambda s: env.reset(key, env_params, override_reset_state=s))(initial_states)
        obs, state = jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), (obs, state))
        n = obs.shape[1]

        def step(carry, _):
            obs, state, alive, solved, ret = carry
            actions = policy(obs.astype(jnp.float32))
            if continuous:
                valid = jnp.all(jnp.isfinite(actions), axis=-1)
                actions = jnp.where(valid[..., None], actions, 0.0)
            else:
                valid = (actions >= 0) & (actions < spec.num_actions)
                actions = jnp.where(valid, actions, 0)
            alive = alive & valid
            obs, state, reward, done, info = step_all(state, actions)
            solved = solved | (alive & done & info["GoalR"])
            ret = ret + jnp.where(alive, reward, 0.0)
            return (obs, state, alive & ~done, solved, ret), None

        off = jnp.zeros((seeds, n), bool)
        carry = (obs, state, ~off, off, jnp.zeros((seeds, n)))
        (_, _, _, solved, ret), _ = jax.lax.scan(step, carry, None, max_timesteps)
        return solved, ret

    return run




def load_policy(directory: str | Path, seeds: int, static_params) -> tuple[Callable, ActionSpec]:
    """The exported policy for Kinetix with these static parameters (policy_export.load_policy): integer actions
    mean Kinetix's discrete action space, floating-point ones its continuous one."""
    return _load_policy(directory, seeds, lambda continuous: action_spec(static_params, continuous))

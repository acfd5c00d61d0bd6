"""NAVIX (MiniGrid in JAX) for the `navix` template: its environments as ppo.Env, and the evaluator's success rate.

NAVIX (epignatelli/navix, Apache-2.0) reimplements MiniGrid's gridworlds as pure JAX: `navix.make(env_id,
max_steps=...)` returns an environment whose `reset(key)` draws a layout (door, key, goal and agent positions,
depending on the environment) from the key and returns a Timestep; its `_step(timestep, action)` advances one step
without resetting. Used by both sides of sealed evaluation:

- Training (harness, tracer): `make_env` is one environment as a ppo.Env. Observations are NAVIX's `symbolic`
  ones, the fully observed grid of (object, colour, state) triples u8[H, W, 3], flattened and cast to float32,
  as NAVIX's PPO baseline feeds them (baselines/ppo.py, FlattenObsWrapper); the 7 MiniGrid actions; NAVIX's
  default reward (1 on reaching the goal, minus 0.01 per action that is not `done`); `solved` is NAVIX's
  goal_reached event at a termination. A finished episode resets at once, with the step's key (gymnax's
  convention, which ppo.make_train expects).
- Scoring (evaluator, trusted): `make_success_rate` plays one episode per layout and seed from layouts the
  evaluator draws (`held_out_keys`: each key a layout of NAVIX's reset), with its own environment code, sampling
  the actions from the exported policy's logits with its own keys (or greedily), and reports which episodes
  reached the goal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import ppo
from jax_workloads.policy_export import ActionSpec
from jax_workloads.sealed import ArtifactError
from jax_workloads.seeds import typed_seed_key

MAX_STEPS = 100  # navix.make's default episode limit, the one NAVIX's baselines train with


def navix_env(env_id: str, max_steps: int = MAX_STEPS):
    """NAVIX's environment env_id with its symbolic observation (its registry's default for every environment)."""
    import navix

    if env_id not in navix.registry():
        raise ValueError(f"NAVIX has no environment {env_id!r}")
    return navix.make(env_id, max_steps=max_steps, observation_fn=navix.observations.symbolic)


def _obs(timestep) -> jax.Array:
    return timestep.observation.reshape(-1).astype(jnp.float32)


def _solved(timestep) -> jax.Array:
    """The goal was reached: NAVIX's goal_reached event at a termination (not at the time limit)."""
    return timestep.is_termination() & timestep.state.events.goal_reached.happened


def make_env(env_id: str, max_steps: int = MAX_STEPS) -> ppo.Env:
    """One NAVIX environment as a ppo.Env (see the module's docstring)."""
    env = navix_env(env_id, max_steps)

    def reset(key):
        timestep = env.reset(key)
        return _obs(timestep), timestep

    def step(key, timestep, action):
        new = env._step(timestep, action)
        done = new.is_done()
        fresh = env.reset(key)
        following = jax.tree.map(lambda a, b: jnp.where(done, a, b), fresh, new)
        return _obs(following), following, new.reward.astype(jnp.float32), done, _solved(new)

    return ppo.Env(reset, step, int(np.prod(env.observation_space.shape)), len(env.action_set), 0, env_id)


def task_envs(config: dict) -> list[ppo.Env]:
    """The navix template's training environments as its public [config] names them (envs, max_steps).

    Raises ValueError, TypeError or KeyError when [config] describes no such environments.
    """
    envs = config["envs"]
    if not isinstance(envs, list) or not envs or not all(isinstance(e, str) for e in envs):
        raise ValueError(f"envs must be a non-empty list of NAVIX environment ids, not {envs!r}")
    return [make_env(env_id, int(config.get("max_steps", MAX_STEPS))) for env_id in envs]


def action_spec(env_id: str, continuous: bool = True, max_steps: int = MAX_STEPS) -> ActionSpec:
    """What the evaluator takes from a policy for env_id (policy_export.load_policy's spec_of): flat symbolic
    observations in, the logits of its discrete actions out, float[seeds, b, num_actions] (the float outputs
    load_policy checks as ActionSpec(obs_size, 0, num_actions)): the evaluator plays the policy itself, sampling
    with its own keys (make_success_rate).

    A policy that returns actions (integers) is refused: raises ArtifactError.
    """
    if not continuous:
        raise ArtifactError("the exported policy returns integer actions; the navix evaluator takes the logits "
                            "of the 7 actions, float[seeds, b, 7], and plays the policy itself")
    env = navix_env(env_id, max_steps)
    return ActionSpec(int(np.prod(env.observation_space.shape)), 0, len(env.action_set))


def held_out_keys(private: dict, index: int, episodes: int) -> tuple[jax.Array, jax.Array]:
    """The evaluator's layouts for the index-th environment (reset keys) and its key for sampling actions, both
    drawn from the private eval_seed."""
    layouts, actions = jax.random.split(jax.random.fold_in(typed_seed_key(int(private["eval_seed"])), index))
    return jax.random.split(layouts, episodes), actions


def make_success_rate(env_id: str, policy: Callable, seeds: int, max_steps: int = MAX_STEPS,
                      sample_key: jax.Array | None = None) -> Callable:
    """Return run(keys [E]) -> (solved [S, E], returns [S, E]): one episode per layout and seed.

    policy(obs [S, E, obs_size]) -> logits [S, E, num_actions], one set of parameters per seed; every seed plays
    the same E layouts (NAVIX's reset of each key). Actions are sampled from the logits with keys derived from
    sample_key (the evaluator's), or with sample_key None the greedy argmax. An episode ends at NAVIX's termination
    (goal reached, or lava) or at max_steps, and is solved when the goal was reached. Non-finite logits end the
    episode unsolved: the evaluator never repairs a policy's output.
    """
    env = navix_env(env_id, max_steps)
    step_all = jax.vmap(jax.vmap(env._step))

    def run(keys):
        timestep = jax.vmap(env.reset)(keys)
        timestep = jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), timestep)
        n = keys.shape[0]

        def step(carry, t):
            timestep, alive, solved, ret = carry
            logits = policy(timestep.observation.reshape(seeds, n, -1).astype(jnp.float32))
            valid = jnp.all(jnp.isfinite(logits), axis=-1)
            logits = jnp.where(valid[..., None], logits, 0.0)
            if sample_key is None:
                actions = jnp.argmax(logits, -1)
            else:
                actions = jax.random.categorical(jax.random.fold_in(sample_key, t), logits)
            alive = alive & valid
            timestep = step_all(timestep, actions)
            solved = solved | (alive & _solved(timestep))
            ret = ret + jnp.where(alive, timestep.reward, 0.0)
            return (timestep, alive & ~timestep.is_done(), solved, ret), None

        off = jnp.zeros((seeds, n), bool)
        carry = (timestep, ~off, off, jnp.zeros((seeds, n)))
        (_, _, solved, ret), _ = jax.lax.scan(step, carry, jnp.arange(max_steps))
        return solved, ret

    return run


def env_labels(env_ids: Sequence[str]) -> list[str]:
    """Short names for tables and figures: Navix-DoorKey-5x5-v0 -> DoorKey-5x5."""
    return [e.removeprefix("Navix-").removesuffix("-v0") for e in env_ids]

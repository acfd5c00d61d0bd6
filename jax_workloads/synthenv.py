"""Synthetic contextual bandits that train agents for a real environment (the synthenv template), trusted side.

After keraJLi/synthetic-gymnax @43e6479 (Apache-2.0; "Discovering Minimal Reinforcement Learning Environments"):
a bandit has episodes of one step. It samples a context (an observation of the real environment's shape) from a
latent draw through an MLP, and pays a reward from an MLP of the context and the one-hot action
(synthetic_gymnax/synthenv_network.py, SynthEnvMLP with only_reward). Agents trained on it are judged on the real
gymnax environment. Everything here is fixed code: the bandit is a *family* (latent distribution, hidden width,
activation) evaluated from plain parameter arrays, so neither the harness nor the evaluator runs a candidate's
computation when it plays a bandit.

    family = Family("Acrobot-v1", latent="normal", hidden=32, activation="relu")
    env = bandit_env(family, unflatten(family, flat_params))      # a ppo.Env: what inner agents train on
    train = make_inner_train("ppo", family, inner)                # train(flat, key, hp) -> agent params
    score = make_greedy_return(family.env_name, inner, episodes, max_steps)   # greedy return on the real env
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jax_workloads import ppo

ENVS = ("Acrobot-v1", "MountainCar-v0", "CartPole-v1")
LATENTS = ("normal", "uniform", "categorical", "softmax")  # upstream's SynthEnv latent_dist options
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}
MAX_HIDDEN = 256

# The inner algorithms' hyperparameter lists, upstream's (examples/acrobot.yaml and the published checkpoints'
# config.yaml, identical for Acrobot-v1 and MountainCar-v0 but PPO's epochs): sampled uniformly per agent.
PPO_GRID = {
    "lr": (0.01, 0.005, 0.001, 0.0005, 0.0001),
    "gamma": (1.0, 0.99, 0.95, 0.9, 0.8),
    "gae_lambda": (1.0, 0.95, 0.9, 0.8, 0.5),
    "clip_eps": (0.1, 0.2, 0.3, 0.4, 0.5),
    "ent_coef": (0.0, 0.01, 0.05, 0.1, 0.5),
    "vf_coef": (0.0, 0.5, 1.0, 1.5, 2.0),
}
DQN_GRID = {"lr": (0.01, 0.005, 0.001, 0.0005, 0.0001), "eps_end": (0.01, 0.05, 0.1, 0.2)}
# The order of the hyperparameter vector the editable sample_hparams returns: PPO's six, then DQN's eps_end (DQN
# takes its learning rate from lr).
HPARAMS = (*PPO_GRID, "eps_end")
# Bounds the harness clips a candidate's sampled hyperparameters into (any value inside trains without NaN).
BOUNDS = {"lr": (1e-5, 0.05), "gamma": (0.0, 1.0), "gae_lambda": (0.0, 1.0), "clip_eps": (0.01, 1.0),
          "ent_coef": (0.0, 1.0), "vf_coef": (0.0, 4.0), "eps_end": (0.0, 1.0)}
# The evaluator's held-out algorithm, REINFORCE (no upstream counterpart: its lists are PPO's).
REINFORCE_GRID = {"lr": (0.01, 0.005, 0.001, 0.0005, 0.0001), "ent_coef": (0.0, 0.01, 0.05, 0.1, 0.5)}


@dataclass(frozen=True)
class Family:
    """The bandit family: which real environment its contexts imitate, and the shape of its two MLPs."""

    env_name: str
    latent: str = "normal"
    hidden: int = 32
    activation: str = "relu"

    def __post_init__(self):
        if self.env_name not in ENVS:
            raise ValueError(f"env {self.env_name!r} is not one of {list(ENVS)}")
        if self.latent not in LATENTS:
            raise ValueError(f"latent {self.latent!r} is not one of {list(LATENTS)}")
        if not (isinstance(self.hidden, int) and not isinstance(self.hidden, bool) and 1 <= self.hidden <= MAX_HIDDEN):
            raise ValueError(f"hidden {self.hidden!r} is not an integer in [1, {MAX_HIDDEN}]")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {list(ACTIVATIONS)}")

    @property
    def sizes(self) -> tuple[int, int]:
        """(observation size, number of actions) of the real environment."""
        return _ENV_SIZES[self.env_name]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter shapes, in the order of the flat vector: the context MLP (latent -> hidden -> obs; the
        latent has the observation's size, as upstream's latent_size default), then the reward MLP
        ([obs, one-hot action] -> hidden -> 1)."""
        obs, actions, h = *self.sizes, self.hidden
        return {"obs_w1": (obs, h), "obs_b1": (h,), "obs_w2": (h, obs), "obs_b2": (obs,),
                "rew_w1": (obs + actions, h), "rew_b1": (h,), "rew_w2": (h, 1), "rew_b2": (1,)}

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_ENV_SIZES = {"Acrobot-v1": (6, 3), "MountainCar-v0": (2, 3), "CartPole-v1": (4, 2)}


def family_from(values: dict, env_name: str) -> Family:
    """The family a manifest declares (untrusted data): ValueError with one line unless every value is valid."""
    if not isinstance(values, dict):
        raise ValueError("the family must be a JSON object")
    unknown = set(values) - {"latent", "hidden", "activation"}
    if unknown:
        raise ValueError(f"unknown family setting {sorted(unknown)[0]!r}")
    return Family(env_name, **values)


def unflatten(family: Family, flat: jax.Array) -> dict[str, jax.Array]:
    """The named parameter arrays of a flat vector [family.size]."""
    out, i = {}, 0
    for name, shape in family.shapes.items():
        n = math.prod(shape)
        out[name] = flat[i:i + n].reshape(shape)
        i += n
    return out


def flatten(family: Family, params: dict[str, jax.Array]) -> jax.Array:
    return jnp.concatenate([jnp.ravel(params[name]) for name in family.shapes])


def sample_latent(family: Family, key: jax.Array) -> jax.Array:
    """One latent draw z [obs_size] (upstream's distrax distributions: a standard normal, U[0, 1), a uniform
    one-hot, or a one-hot with probabilities softmax(-arange))."""
    n = family.sizes[0]
    if family.latent == "normal":
        return jax.random.normal(key, (n,))
    if family.latent == "uniform":
        return jax.random.uniform(key, (n,))
    logits = jnp.zeros(n) if family.latent == "categorical" else jax.nn.log_softmax(-jnp.arange(n, dtype=jnp.float32))
    return jax.nn.one_hot(jax.random.categorical(key, logits), n)


def context(family: Family, params: dict, z: jax.Array) -> jax.Array:
    """The context (observation) of latent z: Dense(hidden), activation, Dense(obs)."""
    act = ACTIVATIONS[family.activation]
    return act(z @ params["obs_w1"] + params["obs_b1"]) @ params["obs_w2"] + params["obs_b2"]


def reward(family: Family, params: dict, obs: jax.Array, action: jax.Array) -> jax.Array:
    """The reward of a discrete action in context obs: Dense(hidden) of [obs, one-hot action], activation, Dense(1)."""
    act = ACTIVATIONS[family.activation]
    x = jnp.concatenate([obs, jax.nn.one_hot(action, family.sizes[1])])
    return (act(x @ params["rew_w1"] + params["rew_b1"]) @ params["rew_w2"] + params["rew_b2"])[0]


def bandit_env(family: Family, params: dict) -> ppo.Env:
    """The bandit as a ppo.Env: every step ends its episode, and the next context is a fresh draw (autoreset)."""
    obs_size, actions = family.sizes

    def reset(key):
        obs = context(family, params, sample_latent(family, key))
        return obs, obs

    def step(key, obs, action):
        next_obs = context(family, params, sample_latent(family, key))
        return next_obs, next_obs, reward(family, params, obs, action), jnp.bool_(True), jnp.bool_(False)

    return ppo.Env(reset, step, obs_size, actions, 0, f"synthetic-{family.env_name}")


# ------------------------------------------------------------------------------------------------ inner algorithms


@dataclass(frozen=True)
class Inner:
    """The inner loop's fixed settings (upstream's inner_config, the non-sampled values)."""

    total_timesteps: int = 10_000
    ppo_envs: int = 5
    ppo_steps: int = 100
    ppo_epochs: int = 10
    ppo_minibatches: int = 10
    max_grad_norm: float = 10.0
    dqn_envs: int = 10
    dqn_buffer: int = 2000
    dqn_fill: int = 1000
    dqn_batch: int = 100
    dqn_exploration: float = 0.5  # fraction of training over which epsilon falls from 1 to eps_end
    reinforce_envs: int = 50  # contexts per REINFORCE step (one Adam step each)
    hidden: int = 64   # the agents' MLPs: 2 x hidden tanh (upstream: activation tanh)
    layers: int = 2


def ppo_config(inner: Inner, hp: jax.Array) -> ppo.PPOConfig:
    """PPO's config with the sampled hyperparameters hp (HPARAMS order; may be traced)."""
    lr, gamma, lam, clip, ent, vf = (hp[i] for i in range(6))
    return ppo.PPOConfig(
        total_timesteps=inner.total_timesteps, num_envs=inner.ppo_envs, num_steps=inner.ppo_steps,
        update_epochs=inner.ppo_epochs, num_minibatches=inner.ppo_minibatches,
        gamma=gamma, gae_lambda=lam, clip_eps=clip, ent_coef=ent, vf_coef=vf,
        max_grad_norm=inner.max_grad_norm, lr=lr, anneal_lr=False, hidden=inner.hidden, layers=inner.layers,
        activation="tanh")


def make_dqn_train(inner: Inner, env: ppo.Env) -> Callable:
    """DQN on a bandit: train(key, hp) -> Q-network params, with hp's first entry the learning rate and its last
    epsilon's final value (HPARAMS, or (lr, eps_end) of DQN_GRID).

    Upstream's DQN (replay buffer 2000 filled with 1000 transitions, batches of 100, one gradient step per
    vector step of 10 environments, epsilon from 1 to eps_end over half of training, Adam, grad norm 10). Every
    bandit transition is terminal, so its TD target is the reward itself: the target network and double-Q have
    nothing to bootstrap and are left out."""
    net = ppo.ActorCritic(env.num_actions, 0, inner.hidden, inner.layers, "tanh")  # its logits are Q-values
    iters = inner.total_timesteps // inner.dqn_envs
    size = inner.dqn_buffer

    def train(key, hp):
        lr, eps_end = hp[0], hp[-1]
        tx = optax.chain(optax.clip_by_global_norm(inner.max_grad_norm), optax.adam(lr))
        key, init_key, reset_key = jax.random.split(key, 3)
        params = net.init(init_key, jnp.zeros((env.obs_size,)))
        opt = tx.init(params)
        obs, state = jax.vmap(env.reset)(jax.random.split(reset_key, inner.dqn_envs))
        buf = (jnp.zeros((size, env.obs_size)), jnp.zeros(size, jnp.int32), jnp.zeros(size))

        def step(carry, i):
            params, opt, obs, state, buf, key = carry
            key, eps_key, rand_key, act_key, step_key, batch_key = jax.random.split(key, 6)
            frac = jnp.clip(i * inner.dqn_envs / (inner.dqn_exploration * inner.total_timesteps), 0.0, 1.0)
            eps = 1.0 + frac * (eps_end - 1.0)
            q, _ = net.apply(params, obs)
            explore = jax.random.uniform(eps_key, (inner.dqn_envs,)) < eps
            action = jnp.where(explore, jax.random.randint(rand_key, (inner.dqn_envs,), 0, env.num_actions),
                               jnp.argmax(q, -1))
            next_obs, state, r, _, _ = jax.vmap(env.step)(jax.random.split(step_key, inner.dqn_envs), state, action)
            slots = (i * inner.dqn_envs + jnp.arange(inner.dqn_envs)) % size
            buf = (buf[0].at[slots].set(obs), buf[1].at[slots].set(action), buf[2].at[slots].set(r))
            filled = jnp.minimum((i + 1) * inner.dqn_envs, size)
            idx = jax.random.randint(batch_key, (inner.dqn_batch,), 0, filled)

            def td(p):
                qb, _ = net.apply(p, buf[0][idx])
                return jnp.mean((jnp.take_along_axis(qb, buf[1][idx][:, None], 1)[:, 0] - buf[2][idx]) ** 2)

            grads = jax.grad(td)(params)
            updates, new_opt = tx.update(grads, opt, params)
            learn = (i + 1) * inner.dqn_envs >= inner.dqn_fill
            params = jax.tree.map(lambda new, old: jnp.where(learn, new, old), optax.apply_updates(params, updates),
                                  params)
            opt = jax.tree.map(lambda new, old: jnp.where(learn, new, old), new_opt, opt)
            return (params, opt, next_obs, state, buf, key), None

        (params, *_), _ = jax.lax.scan(step, (params, opt, obs, state, buf, key), jnp.arange(iters))
        return params

    return train


def make_reinforce_train(inner: Inner, env: ppo.Env) -> Callable:
    """REINFORCE on a bandit, the evaluator's held-out algorithm: train(key, hp = (lr, ent_coef)) -> params.

    Each step samples reinforce_envs contexts and actions from the softmax policy and takes one Adam step (grad
    norm max_grad_norm) on -mean((r - mean r) log pi(a|s)) - ent_coef * entropy: the policy gradient of one-step
    episodes with the batch's mean reward as baseline."""
    net = ppo.ActorCritic(env.num_actions, 0, inner.hidden, inner.layers, "tanh")
    n = inner.reinforce_envs

    def train(key, hp):
        tx = optax.chain(optax.clip_by_global_norm(inner.max_grad_norm), optax.adam(hp[0]))
        key, init_key = jax.random.split(key)
        params = net.init(init_key, jnp.zeros((env.obs_size,)))

        def step(carry, _):
            params, opt, key = carry
            key, ctx_key, act_key, r_key = jax.random.split(key, 4)
            obs, state = jax.vmap(env.reset)(jax.random.split(ctx_key, n))
            logits, _ = net.apply(params, obs)
            action = jax.random.categorical(act_key, logits)
            _, _, r, _, _ = jax.vmap(env.step)(jax.random.split(r_key, n), state, action)

            def loss(p):
                lg, _ = net.apply(p, obs)
                logp = ppo.log_prob(lg, action, True)
                return -jnp.mean((r - r.mean()) * logp) - hp[1] * ppo.entropy(lg, True).mean()

            updates, opt = tx.update(jax.grad(loss)(params), opt, params)
            return (optax.apply_updates(params, updates), opt, key), None

        (params, _, _), _ = jax.lax.scan(step, (params, tx.init(params), key), None, inner.total_timesteps // n)
        return params

    return train


ALGORITHMS = ("ppo", "dqn", "reinforce")
TRAIN_ALGORITHMS = ("ppo", "dqn")  # what meta-training may use: REINFORCE is the evaluator's held-out algorithm


def make_inner_train(algorithm: str, family: Family, inner: Inner) -> tuple[Callable, Callable]:
    """(train(flat bandit params, key, hp) -> agent params, apply(agent params, obs) -> (logits or q, value)) for
    one inner algorithm; all three train the same 2 x hidden tanh MLP (ppo.ActorCritic), whose argmax the real
    environment sees. hp: PPO and DQN take HPARAMS, REINFORCE (lr, ent_coef)."""
    net = ppo.ActorCritic(family.sizes[1], 0, inner.hidden, inner.layers, "tanh")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown inner algorithm {algorithm!r}")

    def train(flat, key, hp):
        env = bandit_env(family, unflatten(family, flat))
        if algorithm == "ppo":
            return ppo.make_train(ppo_config(inner, hp), env, network=net)(key)["params"]
        make = make_dqn_train if algorithm == "dqn" else make_reinforce_train
        return make(inner, env)(key, hp)

    return train, net.apply


def real_env(env_name: str, max_steps: int | jax.Array | None = None) -> ppo.Env:
    """The real gymnax environment (1.0.1) with flat observations; max_steps (may be traced) replaces its episode
    limit, as upstream's evaluation horizon does (eval_env_params.replace(max_steps_in_episode=...))."""
    import gymnax

    env, params = gymnax.make(env_name)
    if max_steps is not None:
        params = params.replace(max_steps_in_episode=max_steps)

    def reset(key):
        obs, state = env.reset(key, params)
        return obs.reshape(-1).astype(jnp.float32), state

    def step(key, state, action):
        obs, state, r, terminated, truncated, _ = env.step(key, state, action, params)
        done = jnp.logical_or(terminated, truncated)
        return obs.reshape(-1).astype(jnp.float32), state, r.astype(jnp.float32), done, jnp.bool_(False)

    obs_size, actions = _ENV_SIZES[env_name]
    return ppo.Env(reset, step, obs_size, actions, 0, env_name)


def default_steps(env_name: str) -> int:
    """The real environment's own episode limit (gymnax 1.0.1: Acrobot 500, MountainCar 200, CartPole 500)."""
    import gymnax

    return int(gymnax.make(env_name)[1].max_steps_in_episode)


def greedy_return(env_name: str, apply: Callable, params, key: jax.Array, episodes: int, rollout_steps: int,
                  horizon: int | jax.Array | None = None) -> jax.Array:
    """Mean return of the greedy policy over `episodes` real episodes of at most `horizon` steps (default: the
    environment's own limit), each played until its first end; rollout_steps (static) >= horizon."""
    env = real_env(env_name, horizon)
    rollout = ppo.make_rollout(env, apply, num_envs=episodes, max_steps=rollout_steps, greedy=True)
    ret, _ = rollout(params, key)
    return ret.mean()


def grid_draws(grid: dict[str, tuple], key: jax.Array, n: int) -> jax.Array:
    """n hyperparameter vectors [n, len(grid)], each value drawn uniformly from its list (upstream's sampling)."""
    keys = jax.random.split(key, len(grid))
    cols = [jnp.asarray(v, jnp.float32)[jax.random.randint(k, (n,), 0, len(v))] for k, v in zip(keys, grid.values(),
                                                                                              strict=True)]
    return jnp.stack(cols, -1)


def clip_hparams(hp: jax.Array) -> jax.Array:
    """A candidate's hyperparameters clipped into BOUNDS (NaN becomes 0, then the lower bound)."""
    lo = jnp.asarray([BOUNDS[k][0] for k in HPARAMS])
    hi = jnp.asarray([BOUNDS[k][1] for k in HPARAMS])
    return jnp.clip(jnp.nan_to_num(hp, nan=0.0), lo, hi)


@dataclass(frozen=True)
class Meta:
    """The outer loop's size: population per generation, generations, real episodes per fitness, and the longest
    fitness horizon (the static length of a fitness rollout; the candidate's horizon is clipped into it)."""

    population: int = 128
    generations: int = 100
    fitness_episodes: int = 50
    max_horizon: int = 500


# The evolution strategy's settings a candidate may choose, and their ranges (search_space.py RANGES: the same).
SIGMA_INIT_RANGE = (0.005, 0.5)
LR_MEAN_RANGE = (0.1, 2.0)
# The bound on fitness-shaping weights: sum |w| <= WEIGHT_BOUND, else w is rescaled onto it. 2 is the largest sum
# of any weights that are a distribution minus the uniform one (|p_i - 1/n| <= p_i + 1/n, summed: 2), which
# evosax's rank weights are, so the baseline's pass unchanged; it bounds how far one generation can move the mean
# (at most LR_MEAN * std * 2 * max |z| per coordinate) whatever the candidate returns.
WEIGHT_BOUND = 2.0


@dataclass(frozen=True)
class Strategy:
    """The candidate's SNES settings (plain data in its manifest): the initial standard deviation and the mean's
    learning rate, each a number in its declared range (ValueError with one line otherwise)."""

    sigma_init: float = 0.05
    lr_mean: float = 1.0

    def __post_init__(self):
        for name, (lo, hi) in (("sigma_init", SIGMA_INIT_RANGE), ("lr_mean", LR_MEAN_RANGE)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
                raise ValueError(f"{name.upper()} {v!r} is not a number in [{lo:g}, {hi:g}]")


def strategy_from(values: dict) -> Strategy:
    """The strategy a manifest declares (untrusted data): ValueError with one line unless every value is valid."""
    if not isinstance(values, dict) or set(values) != {"sigma_init", "lr_mean"}:
        raise ValueError(f"the strategy must be an object of sigma_init and lr_mean, not {values!r}"[:200])
    return Strategy(**values)


def init_params(family: Family, key: jax.Array) -> jax.Array:
    """The ES's first mean [family.size]: flax's default Dense initialisation (lecun normal kernels, zero biases)
    of the two MLPs, one key per kernel in the order obs_w1, obs_w2, rew_w1, rew_w2 (what the baseline's init
    computed before the harness owned it: tests/test_synthenv_fidelity.py)."""
    kernels = [name for name, shape in family.shapes.items() if len(shape) == 2]
    lecun = jax.nn.initializers.lecun_normal()
    params = {name: lecun(k, family.shapes[name]) for k, name in zip(jax.random.split(key, len(kernels)), kernels,
                                                                     strict=True)}
    return flatten(family, {name: params.get(name, jnp.zeros(shape)) for name, shape in family.shapes.items()})


def shaped_weights(shape: Callable, fitness: jax.Array, generation: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The candidate's fitness shaping, made unable to pick members by anything but their fitness: (weights [P],
    finite) with weights[i] the weight of member i.

    shape sees the fitness sorted best first (never z, the mean or std) and returns one weight per place; members
    that tie take the weight of their group's first place, so neither a member's index nor its place among equals
    counts. Non-finite weights become zeros (no step) and finite is False; finite weights are rescaled onto
    sum |w| <= WEIGHT_BOUND when above it and passed unchanged otherwise."""
    order = jnp.argsort(-fitness, stable=True)
    ranked = fitness[order]
    w_ranked = jnp.asarray(shape(ranked, generation), jnp.float32).reshape(fitness.shape)
    first = jnp.searchsorted(-ranked, -ranked, side="left")  # the first place of each place's tie group
    w = jnp.zeros_like(w_ranked).at[order].set(w_ranked[first])
    finite = jnp.all(jnp.isfinite(w))
    w = jnp.where(finite, w, 0.0)
    total = jnp.abs(w).sum()
    return jnp.where(total > WEIGHT_BOUND, w * (WEIGHT_BOUND / total), w), finite


def snes_step(mean: jax.Array, std: jax.Array, z: jax.Array, w: jax.Array, lr_mean: float) -> tuple[jax.Array,
                                                                                                       jax.Array]:
    """One SNES step (evosax 0.3 SNES.tell, maximising) for the population mean + std * z with weights w [P]:
    the mean moves by lr_mean * std * (w @ z), the std by exp(lr_std / 2 * w @ (z**2 - 1)), lr_std = (3 + ln d) /
    (5 sqrt d)."""
    d = mean.shape[0]
    lr_std = (3 + jnp.log(d)) / (5 * jnp.sqrt(d))
    return mean + lr_mean * std * (w @ z), std * jnp.exp(0.5 * lr_std * (w @ (z**2 - 1)))


class MetaFns(NamedTuple):
    """The candidate's functions as the harness calls them (exported StableHLO, or bandit.py's own in tests).

    shape(fitness [P] sorted best first, generation) -> weights [P]; sample_hparams(key_data, generation) -> [7];
    horizon(generation) -> scalar. Nothing of the candidate's sets or moves the bandit's parameters: the harness
    initialises them (init_params), samples the population and takes the SNES step (snes_step)."""

    shape: Callable
    sample_hparams: Callable
    horizon: Callable


class MetaSteps(NamedTuple):
    """One generation of meta-training in steps, each jittable and vmappable over seeds (make_meta_steps).

    The costly step, `fitness[a]` (training one agent per member with algorithm a and playing it on the real
    environment), takes the population's parameters, keys, hyperparameters and horizon as plain arrays and runs no
    function of the candidate's: the harness compiles it as a program of its own, which the compilation cache then
    serves to every candidate of the same family (the runner starts a candidate's cache from the shipped
    candidate's). `ask` and `tell` hold what the candidate decides (hyperparameters, horizon, fitness shaping).
    """

    start: Callable              # (key) -> (mean [D], std [D], key)
    ask: Callable                # (mean, std, key, g) -> (z [P, D], (members [P, D], keys [P], hp [P, 7], h), key)
    fitness: tuple[Callable, ...]  # per algorithm: (members, keys, hp, h) -> fitness [P]
    tell: Callable               # (mean, std, z, fitness, g) -> (mean, std, finite, curves)


def make_meta_steps(family: Family, algorithms: tuple[str, ...], inner: Inner, meta: Meta, strategy: Strategy,
                    fns: MetaFns, fitness: tuple[Callable, ...] | None = None) -> MetaSteps:
    """The steps of one generation: sample the population around the mean, draw each member's hyperparameters
    (the candidate's sample_hparams, clipped) and the horizon (the candidate's, clipped); train one agent per
    member on its bandit with this generation's algorithm and play its greedy policy for the horizon in the real
    environment; weight the members by the candidate's shaping of their fitness (shaped_weights) and take the
    SNES step (snes_step). The mean starts at flax's default initialisation, the std at strategy.sigma_init.
    fitness, one (members, keys, hp, h) -> [P] per algorithm, replaces training and play (tests: cheap ones)."""
    pop = meta.population

    def start(key):
        key, init_key = jax.random.split(key)
        mean = init_params(family, init_key)
        return mean, jnp.full_like(mean, strategy.sigma_init), key

    def ask(mean, std, key, g):
        key, z_key, hp_key, run_key = jax.random.split(key, 4)
        z = jax.random.normal(z_key, (pop, family.size))
        hp = jax.vmap(lambda k: clip_hparams(fns.sample_hparams(jax.random.key_data(k), g)))(
            jax.random.split(hp_key, pop))
        h = jnp.clip(jnp.round(jnp.nan_to_num(fns.horizon(g), nan=1.0)), 1, meta.max_horizon).astype(jnp.int32)
        return z, (mean + std * z, jax.random.split(run_key, pop), hp, h), key

    def fitness_of(train, apply):
        def member(flat, key, hp, h):
            train_key, eval_key = jax.random.split(key)
            agent = train(flat, train_key, hp)
            return greedy_return(family.env_name, apply, agent, eval_key, meta.fitness_episodes, meta.max_horizon, h)

        return jax.vmap(member, in_axes=(0, 0, 0, None))

    def tell(mean, std, z, fitness, g):
        w, finite = shaped_weights(fns.shape, fitness, g)
        new_mean, new_std = snes_step(mean, std, z, w, strategy.lr_mean)
        curves = {"fitness_mean": fitness.mean(), "fitness_max": fitness.max(), "std_mean": std.mean()}
        return new_mean, new_std, finite, curves

    if fitness is None:
        fitness = tuple(fitness_of(*make_inner_train(a, family, inner)) for a in algorithms)
    return MetaSteps(start, ask, fitness, tell)


def make_meta_train(family: Family, algorithms: tuple[str, ...], inner: Inner, meta: Meta, strategy: Strategy,
                    fns: MetaFns, fitness: tuple[Callable, ...] | None = None) -> Callable:
    """Return meta_train(key) -> {"params": the final bandit [D], "curves": per generation, "finite": [G] whether
    each generation's weights were finite}: make_meta_steps' generations as one program (a lax.scan; algorithms
    in turn, as upstream's get_algos), for tests and in-process use; jit and vmap it over seeds. The harness runs
    the same steps as separate programs (run_meta_train); fitness as in make_meta_steps."""
    steps = make_meta_steps(family, algorithms, inner, meta, strategy, fns, fitness)

    def meta_train(key):
        def generation(carry, g):
            mean, std, key = carry
            g = g.astype(jnp.int32)
            z, members, key = steps.ask(mean, std, key, g)
            fitness = jax.lax.switch(g % len(steps.fitness), steps.fitness, *members)
            mean, std, finite, curves = steps.tell(mean, std, z, fitness, g)
            return (mean, std, key), (curves | {"horizon": members[3].astype(jnp.float32)}, finite)

        (mean, _, _), (curves, finite) = jax.lax.scan(generation, steps.start(key), jnp.arange(meta.generations))
        return {"params": mean, "curves": curves, "finite": finite}

    return meta_train


def run_meta_train(family: Family, algorithms: tuple[str, ...], inner: Inner, meta: Meta, strategy: Strategy,
                   fns: MetaFns, keys: jax.Array, progress: Callable | None = None,
                   compiled: Callable | None = None, fitness: tuple[Callable, ...] | None = None) -> dict:
    """Every seed's meta-training (keys [S]), as make_meta_train computes it, with each generation's steps as
    compiled programs over all seeds at once; the generations are a Python loop. The fitness programs (one per
    inner algorithm) run nothing of the candidate's, so a compilation cache that holds them (the shipped
    candidate's, for one) spares their compilation, most of a run's. progress(g) after each generation;
    compiled() once every program is compiled (a phase mark); fitness as in make_meta_steps."""
    steps = make_meta_steps(family, algorithms, inner, meta, strategy, fns, fitness)
    start, ask, tell = (jax.jit(jax.vmap(f, axes)) for f, axes in
                        ((steps.start, 0), (steps.ask, (0, 0, 0, None)), (steps.tell, (0, 0, 0, 0, None))))
    fitness = [jax.jit(jax.vmap(f)) for f in steps.fitness]
    g0 = jnp.int32(0)
    # Compiled ahead, at abstract shapes, so that the compile phase is timed apart from meta-training.
    mean, std, key = jax.eval_shape(start, keys)
    z, members, _ = jax.eval_shape(ask, mean, std, key, g0)
    fit = jax.eval_shape(fitness[0], *members)
    start, ask, tell = (f.lower(*args).compile() for f, args in
                        ((start, (keys,)), (ask, (mean, std, key, g0)), (tell, (mean, std, z, fit, g0))))
    fitness = [f.lower(*members).compile() for f in fitness]
    if compiled is not None:
        compiled()
    mean, std, key = start(keys)
    curves, finite = [], []
    for g in range(meta.generations):
        z, members, key = ask(mean, std, key, jnp.int32(g))
        fit = fitness[g % len(fitness)](*members)
        mean, std, ok, c = tell(mean, std, z, fit, jnp.int32(g))
        curves.append(c | {"horizon": members[3].astype(jnp.float32)})
        finite.append(ok)
        if progress is not None:
            progress(g)
    stacked = {k: jnp.stack([c[k] for c in curves], axis=1) for k in curves[0]}  # [S, G]
    return jax.block_until_ready({"params": mean, "curves": stacked, "finite": jnp.stack(finite, axis=1)})

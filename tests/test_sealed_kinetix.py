"""Sealed training for the kinetix template: the tracer exports the agent, the harness trains with the exports.

The tracer (templates/kinetix/trace.py) is the only process that imports agent.py; it exports the network's
init and apply, the loss with its derivative (the candidate's own apply baked in) and the network for the
evaluator's batches, as StableHLO. The harness imports those (checked to be plain computation), gates them and
trains. These tests check that the exports compute what the candidate's own functions compute, that the greedy
policy the harness composes from them still passes the evaluator's checks, that tampered exports are refused,
and (slow) that training through the exports gives the per-seed results training with the imported agent gave.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

from base.template import load_template
from jax_workloads import exported, ppo, sealed
from jax_workloads import kinetix_tasks as kt

KINETIX = ROOT / "templates" / "kinetix"
AGENTS = {"baseline": KINETIX / "agent.py", "continuous": KINETIX / "candidates" / "continuous.py"}
# Small batch shapes: 8 environments; minibatches of 32 (64 transitions in 2 minibatches would be the tiny run's).
CONFIG = {"levels": ["s/h0_weak_thrust"], "max_timesteps": 256,
          "ppo": {"total_timesteps": 128, "num_envs": 8, "num_steps": 16, "num_minibatches": 4}}


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


harness = load_module(KINETIX / "harness.py", "sealed_kinetix_harness")
tracer = load_module(KINETIX / "trace.py", "sealed_kinetix_trace")
evaluator = load_module(KINETIX / "evaluate.py", "sealed_kinetix_evaluate")


@pytest.fixture(scope="module", params=sorted(AGENTS))
def traced(request, tmp_path_factory):
    """(the candidate module as the old harness imported it, its env, the harness's Agent from the tracer's exports)."""
    path = AGENTS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    tracer.trace(str(path), CONFIG, folder / "exports")
    agent = harness.load_agent(folder / "exports")
    module = load_module(path, f"sealed_kinetix_{request.param}")
    env = kt.task_env(CONFIG, module.CONTINUOUS)
    harness.gate(agent, env, harness.ppo_config(CONFIG))
    return module, env, agent, folder / "exports"


def test_tracer_writes_the_exports_and_manifest(traced):
    module, _, agent, exports = traced
    assert sorted(p.name for p in exports.iterdir()) == [
        "apply.jaxexport", "init.jaxexport", "loss.jaxexport", "manifest.json", "policy.jaxexport"]
    assert json.loads((exports / "manifest.json").read_text()) == {"continuous": module.CONTINUOUS}
    assert agent.continuous is module.CONTINUOUS
    # Training's exports are for the device the tracer ran on (here the CPU); the evaluator's network is for
    # the CPU wherever it ran, with a symbolic batch size; only the loss carries its derivative.
    for name, vjp in [("init", False), ("apply", False), ("loss", True), ("policy", False)]:
        exp = jax.export.deserialize(bytearray((exports / f"{name}{exported.SUFFIX}").read_bytes()))
        assert exp.platforms == ("cpu",) and exp.has_vjp() == vjp, name
    policy = jax.export.deserialize(bytearray((exports / f"policy{exported.SUFFIX}").read_bytes()))
    assert str(policy.in_avals[-1].shape) == "(vmapped, b, 140)"


def test_exports_compute_what_the_candidate_computes(traced):
    module, env, agent, _ = traced
    config = harness.ppo_config(CONFIG)
    net = module.make_network(env.num_actions, env.action_dim)
    ours = agent.network()
    keys = jax.random.split(jax.random.key(5), 2)  # two seeds, under vmap as make_train runs
    zeros = jnp.zeros((env.obs_size,))
    params = jax.jit(jax.vmap(net.init, in_axes=(0, None)))(keys, zeros)
    assert_same(jax.jit(jax.vmap(ours.init, in_axes=(0, None)))(keys, zeros), params, exact=True)

    obs = jax.random.uniform(jax.random.key(1), (2, config.num_envs, env.obs_size), minval=-2, maxval=2)
    reference = jax.jit(jax.vmap(net.apply))
    assert_same(jax.jit(jax.vmap(ours.apply))(params, obs), reference(params, obs))
    for b in (1, 300):  # the evaluator's batch is its own
        o = jax.random.normal(jax.random.key(b), (2, b, env.obs_size))
        assert_same(jax.jit(jax.vmap(agent.policy))(params, o), reference(params, o))

    m = config.minibatch_size
    mb_obs = jax.random.uniform(jax.random.key(2), (2, m, env.obs_size), minval=-2, maxval=2)
    policy_out, value = reference(params, mb_obs)
    action = jax.vmap(lambda k, p: ppo.sample_action(k, p, env.discrete))(jax.random.split(jax.random.key(3), 2),
                                                                          policy_out)
    logp = ppo.log_prob(policy_out, action, env.discrete)
    adv = jax.random.normal(jax.random.key(4), (2, m))
    batch = ppo.Batch(mb_obs, action, logp + 0.1 * adv, value, adv, value + adv)

    def grad_of(loss, apply):
        return jax.vmap(jax.grad(lambda p, b: loss(p, apply, b, config, env.discrete), has_aux=True))

    want = jax.jit(jax.vmap(lambda p, b: module.loss(p, net.apply, b, config, env.discrete)))(params, batch)
    assert_same(jax.jit(jax.vmap(lambda p, b: agent.ppo_loss(p, ours.apply, b, config, env.discrete)))(params, batch),
                want)
    want = jax.jit(grad_of(module.loss, net.apply))(params, batch)
    assert_same(jax.jit(grad_of(agent.ppo_loss, ours.apply))(params, batch), want)


def test_exports_run_in_a_process_that_traced_nothing(traced):
    """As in a run: the harness's process deserializes the exports and has lowered no linear algebra itself, so
    jax has not initialised its LAPACK kernels, which the init's QR decomposition calls (jax-ml/jax#29610: a
    segfault unless kt.init_lapack, which load_agent calls, has)."""
    module, env, _, exports = traced
    code = f"""
import importlib.util, json
import jax, jax.numpy as jnp
spec = importlib.util.spec_from_file_location("harness", {str(KINETIX / "harness.py")!r})
harness = importlib.util.module_from_spec(spec)
spec.loader.exec_module(harness)
agent = harness.load_agent({str(exports)!r})
params = jax.jit(agent.network().init)(jax.random.key(5), jnp.zeros(({env.obs_size},)))
print(json.dumps([float(jnp.sum(x)) for x in jax.tree.leaves(params)]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    net = module.make_network(env.num_actions, env.action_dim)
    params = jax.jit(net.init)(jax.random.key(5), jnp.zeros((env.obs_size,)))
    want = [float(jnp.sum(x)) for x in jax.tree.leaves(params)]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == want


def assert_same(got, want, exact: bool = False) -> None:
    """Same structure and values: bit for bit, or to float32 rounding (one XLA program against another)."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if exact:
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_greedy_policy_from_the_exports_passes_the_evaluators_checks(traced, tmp_path):
    module, env, agent, _ = traced
    net = module.make_network(env.num_actions, env.action_dim)
    params = jax.jit(jax.vmap(net.init, in_axes=(0, None)))(jax.random.split(jax.random.key(0), 2),
                                                            jnp.zeros((env.obs_size,)))

    def act(apply):
        def one(p, o):
            a = ppo.greedy_action(apply(p, o)[0], env.discrete)
            return a.astype(jnp.int32) if env.discrete else a.astype(jnp.float32)
        return lambda params, obs: jax.vmap(one)(params, obs)

    kt.export_policy(act(agent.policy), params, env.obs_size, tmp_path)  # as the harness exports it
    _, static_params = kt.load_levels(CONFIG["levels"])
    policy, spec = kt.load_policy(tmp_path, 2, static_params)  # sealed.load_export, for the CPU
    assert spec.num_actions == env.num_actions and spec.action_dim == env.action_dim
    for b in (1, 9):
        obs = jax.random.normal(jax.random.key(b), (2, b, env.obs_size))
        got, want = np.asarray(jax.jit(policy)(obs)), np.asarray(jax.jit(act(net.apply))(params, obs))
        if env.discrete:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- what the harness refuses


def _refused(exports: Path, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        harness.load_agent(exports)
    assert e.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("HARNESS-FAIL: the traced agent was refused: "), lines
    return lines[0]


def _with_host_callback(path: Path) -> None:
    """What a hostile tracer could leave: the network's signature, a module that calls back into Python."""
    from jax._src.export._export import _module_to_bytecode

    exp = jax.export.deserialize(bytearray(path.read_bytes()))
    ins, outs = ([jax.ShapeDtypeStruct((1, *a.shape[1:]), a.dtype) for a in avals]
                 for avals in (exp.in_avals, exp.out_avals))

    def evil(*flat):
        x = sum(jnp.sum(a) for a in flat)
        return [jax.pure_callback(lambda v, o=o: np.zeros(o.shape, o.dtype), o, x) for o in outs]

    module = _module_to_bytecode(jax.jit(evil).lower(*ins).compiler_ir("stablehlo"))
    path.write_bytes(dataclasses.replace(exp, mlir_module_serialized=module).serialize())


TAMPERED = {
    "garbage": (lambda d: (d / "loss.jaxexport").write_bytes(b"I solved every level"),
                "loss.jaxexport is not a jax.export artifact"),
    "missing": (lambda d: (d / "policy.jaxexport").unlink(), "exported no policy.jaxexport"),
    "host_callback": (lambda d: _with_host_callback(d / "apply.jaxexport"), "(a host callback)"),
    "manifest": (lambda d: (d / "manifest.json").write_text('{"continuous": "yes"}'),
                 "its manifest's continuous is 'yes', not true or false"),
    "no_manifest": (lambda d: (d / "manifest.json").unlink(), "its manifest's continuous is None"),
}


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_tampered_exports_are_refused_with_one_line(name, traced, tmp_path, capsys):
    exports = tmp_path / "exports"
    exports.mkdir()
    for f in traced[3].iterdir():
        (exports / f.name).write_bytes(f.read_bytes())
    tamper, message = TAMPERED[name]
    tamper(exports)
    assert message in _refused(exports, capsys)


@pytest.mark.parametrize("platform, kernel", [("cuda", "cusolver_geqrf_ffi"), ("rocm", "hipsolver_geqrf_ffi")])
def test_init_traced_on_a_gpu_is_accepted(platform, kernel, traced, tmp_path):
    """On a GPU the tracer's init holds the GPU's QR kernels (orthogonal initialisation): the harness loads it
    (cross-lowered here, as the tracer on a GPU exports it), where sealed.PLAIN_CUSTOM_CALLS alone refuses it."""
    module, env, _, exports = traced
    net = module.make_network(env.num_actions, env.action_dim)
    (vmapped,) = jax.export.symbolic_shape(exported._AXIS)
    exp = jax.export.export(jax.jit(jax.vmap(lambda kd, o: net.init(jax.random.wrap_key_data(kd), o))),
                            platforms=[platform])(exported.spec((vmapped, 2), jnp.uint32),
                                                  exported.spec((vmapped, env.obs_size)))
    assert kernel in exp.mlir_module()
    folder = tmp_path / "exports"
    folder.mkdir()
    for f in exports.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "init.jaxexport").write_bytes(exp.serialize(vjp_order=0))
    assert harness.load_agent(folder).continuous is module.CONTINUOUS
    with pytest.raises(sealed.ArtifactError, match=f"custom call '{kernel}'"):
        exported.import_function(folder / "init")


def test_harness_never_imports_the_candidate():
    """The template declares its tracer; the harness names no editable module (load_template checks) and
    loads no Python file (nothing of importlib or the candidate loader)."""
    t = load_template(str(KINETIX))
    assert t.spec.tracer == "trace.py" and t.spec.editable == ["agent.py"]
    source = (KINETIX / "harness.py").read_text()
    assert "importlib" not in source and "load_candidate" not in source and "agent.py\"" not in source
    # The loss's config is read alike on both sides: by the one function they share (jax_workloads.ppo_agent).
    assert harness.ppo_config is tracer.ppo_agent.ppo_config


# ---------------------------------------------------------------- old path against new, trained (slow)

LEVELS = ["s/h2_one_wheel_car", "s/h3_point_the_thruster", "s/h6_unicycle_right"]


def tiny_run_config() -> tuple[dict, dict]:
    """The template's [config] and [private] at the tiny sandboxed run's settings (tests/test_kinetix.py TINY)."""
    t = tomllib.loads((KINETIX / "template.toml").read_text())
    config, private = t["config"], t["private"]
    config["levels"] = LEVELS
    config["ppo"].update(total_timesteps=256, num_envs=8, num_steps=16, num_minibatches=2)
    return config, {**private, "episodes_per_level": 2}


def train_and_score(config: dict, private: dict, env: ppo.Env, network, loss, policy_apply, work: Path):
    """Train 2 seeds, export the greedy policy as the harness does, score it with the evaluator."""
    cfg = harness.ppo_config(config)
    rngs = jax.random.split(jax.random.key(config["train_seed"]), 2)
    out = jax.jit(jax.vmap(ppo.make_train(cfg, env, network=network, loss=loss)))(rngs)

    def act(params, obs):
        def one(p, o):
            a = ppo.greedy_action(policy_apply(p, o)[0], env.discrete)
            return a.astype(jnp.int32) if env.discrete else a.astype(jnp.float32)
        return jax.vmap(one)(params, obs)

    kt.export_policy(act, out["params"], env.obs_size, work / "artifacts")
    keep = kt.curve_indices(cfg.num_updates)
    sealed.export_arrays(work / "artifacts" / "train_curves.npz", {
        "steps": ((keep + 1) * cfg.num_envs * cfg.num_steps).astype(np.float32),
        "solved": np.asarray(out["metrics"]["solved"], np.float32)[:, keep],
        "return": np.asarray(out["metrics"]["return"], np.float32)[:, keep]})
    return out, evaluator.evaluate(work, config, private, 2)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # two compilations of Kinetix's training and two of its evaluation: 10-30 minutes on 2 cores
@pytest.mark.parametrize("name", sorted(AGENTS))
def test_training_through_the_exports_gives_the_imported_agents_results(name, tmp_path):
    """The baseline and the continuous candidate (the one other action head), trained on the tiny run's settings
    with the candidate imported (as the harness did before sealed training) and through the tracer's exports:
    the same parameters and metrics to float32 rounding, the same per-seed solve rates."""
    config, private = tiny_run_config()
    module = load_module(AGENTS[name], f"sealed_kinetix_old_{name}")
    env = kt.task_env(config, module.CONTINUOUS)
    net = module.make_network(env.num_actions, env.action_dim)
    old, old_info = train_and_score(config, private, env, net, module.loss, net.apply, tmp_path / "old")

    tracer.trace(str(AGENTS[name]), config, tmp_path / "exports")
    agent = harness.load_agent(tmp_path / "exports")
    harness.gate(agent, env, harness.ppo_config(config))
    new, new_info = train_and_score(config, private, env, agent.network(), agent.ppo_loss, agent.policy,
                                    tmp_path / "new")
    for key in ("params", "metrics"):
        assert_same(new[key], old[key])
    assert new_info["per_seed"]["solve_rate"] == old_info["per_seed"]["solve_rate"]
    np.testing.assert_allclose(new_info["per_seed"]["return"], old_info["per_seed"]["return"], rtol=1e-4)

"""The kinetix template: sealed policy export, the evaluator's solve rate, the gate, the search space, the CLI.

Real JAX and Kinetix throughout. Compiling Kinetix on a CPU takes tens of seconds, so the default
tests compile it twice (the evaluator's rollout, and one manual episode); the full sandboxed runs
are marked slow. The gate's tests run the tracer (trace.py, which alone imports agent.py) and the
harness's gate on its exports, as a run does (tests/test_sealed_kinetix.py: the exports themselves).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, scientist, unoptimized

from base.template import load_template
from jax_workloads import kinetix_tasks as kt
from jax_workloads import ppo
from jax_workloads.sealed import ArtifactError

KINETIX = ROOT / "templates" / "kinetix"
# Three levels with known answers: h2 is solved by holding motor action 1, h6 by motor action 0,
# h3 by neither (it needs its thruster aimed); measured on the handmade levels and checked below.
LEVELS = ["s/h2_one_wheel_car", "s/h3_point_the_thruster", "s/h6_unicycle_right"]
NOOP, INVALID = 8, 99


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluator = load_module(KINETIX / "evaluate.py", "kinetix_evaluate")
harness = load_module(KINETIX / "harness.py", "kinetix_harness")
tracer = load_module(KINETIX / "trace.py", "kinetix_trace")
space = load_module(KINETIX / "search_space.py", "kinetix_search_space")

TINY = {  # a sandboxed run in about two minutes on 2 cores, nearly all of it compilation
    "seeds": "2",
    "time_s": "420",
    "eval_time_s": "300",
    "memory_mb": "4096",
    "total_timesteps": "256",
    "num_envs": "8",
    "num_steps": "16",
    "num_minibatches": "2",
    "episodes_per_level": "2",
}


def write_tiny_kinetix(dest: Path, **overrides: str) -> Path:
    """Copy the kinetix template to dest/kinetix, training on LEVELS at TINY settings (and overrides)."""
    root = dest / "kinetix"
    shutil.copytree(KINETIX, root, ignore=shutil.ignore_patterns("__pycache__"))
    toml = (root / "template.toml").read_text()
    toml, n = re.subn(r"(?ms)^levels = \[.*?\]$", "levels = " + json.dumps(LEVELS), toml)
    assert n == 1
    for key, value in {**TINY, **overrides}.items():
        # The first match is the base settings' (the cpu profile's); the profiles at the end use dotted keys.
        toml, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", toml, count=1)
        assert n == 1, key
    (root / "template.toml").write_text(unoptimized(toml))  # as conftest.copy_template
    return root


def tiny_config(**variation: float) -> dict:
    return {"levels": LEVELS, "max_timesteps": 256, "variation": variation,
            "ppo": {"total_timesteps": 256, "num_envs": 8, "num_steps": 16, "num_minibatches": 2}}


# ---------------------------------------------------------------- export helpers


def constant_policy(params, obs):
    """Each seed plays the argmax of its own row of params["w"], whatever it observes."""
    return jnp.broadcast_to(jnp.argmax(params["w"], -1)[:, None], obs.shape[:2]).astype(jnp.int32)


def export_constant(directory: Path, actions: list[int], curves: int = 2) -> None:
    """Export seeds that each hold one discrete action (INVALID: a logit column beyond the action space)."""
    w = np.zeros((len(actions), 100), np.float32)
    w[np.arange(len(actions)), actions] = 1.0
    kt.export_policy(constant_policy, {"w": jnp.asarray(w)}, 140, directory)
    s = len(actions)
    np.savez(directory / "train_curves.npz", steps=np.arange(curves, dtype=np.float32),
             solved=np.zeros((s, curves), np.float32), **{"return": np.zeros((s, curves), np.float32)})


@pytest.fixture(scope="module")
def levels():
    return kt.load_levels(LEVELS)


def mlp_policy(obs_size: int = 140, seeds: int = 2, hidden: int = 16):
    """A real (small) flax policy with per-seed parameters, as the harness exports it."""
    net = ppo.ActorCritic(11, 0, hidden, 2, "tanh")
    params = jax.vmap(lambda k: net.init(k, jnp.zeros((obs_size,))))(jax.random.split(jax.random.key(3), seeds))

    def act(p, obs):
        return jax.vmap(lambda pi, o: jnp.argmax(net.apply(pi, o)[0], -1).astype(jnp.int32))(p, obs)

    return act, params


# ---------------------------------------------------------------- sealed export: round trip and rejection


def test_exported_policy_round_trips(tmp_path, levels):
    _, static_params = levels
    act, params = mlp_policy()
    kt.export_policy(act, params, 140, tmp_path)
    policy, spec = kt.load_policy(tmp_path, 2, static_params)
    assert spec == kt.ActionSpec(obs_size=140, num_actions=11, action_dim=0)
    for batch in (1, 7):  # the batch size is symbolic: the evaluator chooses it
        obs = jax.random.normal(jax.random.key(batch), (2, batch, 140))
        got = jax.jit(policy)(obs)
        assert got.shape == (2, batch) and np.array_equal(got, act(params, obs))
    # The two seeds are different policies, and the artifact is the network's StableHLO, matmuls and all.
    obs = jax.random.normal(jax.random.key(0), (2, 64, 140))
    assert not np.array_equal(*np.asarray(policy(obs)))
    text = jax.export.deserialize(bytearray((tmp_path / kt.EXPORT_FILE).read_bytes())).mlir_module()
    assert "stablehlo.dot_general" in text and "stablehlo.tanh" in text


def test_continuous_policy_is_recognised(tmp_path, levels):
    _, static_params = levels

    def act(p, obs):
        return jnp.tanh(obs[..., :6] * p["w"][:, None, :])

    kt.export_policy(act, {"w": jnp.ones((2, 6))}, 140, tmp_path)
    policy, spec = kt.load_policy(tmp_path, 2, static_params)
    assert spec.num_actions == 0 and spec.action_dim == 6
    assert policy(jnp.ones((2, 3, 140))).shape == (2, 3, 6)


def _rewrite(tmp_path, fn):
    """Export a small policy, then let fn(Exported) -> bytes replace the artifact."""
    act, params = mlp_policy()
    kt.export_policy(act, params, 140, tmp_path)
    path = tmp_path / kt.EXPORT_FILE
    path.write_bytes(fn(jax.export.deserialize(bytearray(path.read_bytes())), path.read_bytes(), params))


def _with_host_callback(exported, blob, params):
    """What a hostile harness could write: the same signature, a module that calls back into Python."""
    from jax._src.export._export import _module_to_bytecode

    act, _ = mlp_policy()

    def evil(flat, obs):
        actions = act(jax.tree.unflatten(jax.tree.structure(params), flat), obs)
        return jax.pure_callback(lambda a: a, jax.ShapeDtypeStruct(actions.shape, actions.dtype), actions)

    lowered = jax.jit(evil).lower(jax.tree.leaves(params), jnp.zeros((2, 4, 140)))
    module = _module_to_bytecode(lowered.compiler_ir("stablehlo"))
    return dataclasses.replace(exported, mlir_module_serialized=module).serialize()


def _with_foreign_custom_call(exported, blob, params):
    """A custom call to a name that is not a shape assertion or LAPACK (text-level tamper of the module)."""
    from jax._src.export._export import _module_to_bytecode
    from jax._src.interpreters import mlir as jax_mlir
    from jax._src.lib.mlir import ir

    text = exported.mlir_module().replace("@shape_assertion", "@my_secret_kernel")
    module = ir.Module.parse(text, context=jax_mlir.make_ir_context())
    return dataclasses.replace(exported, mlir_module_serialized=_module_to_bytecode(module)).serialize()


REJECTED = {
    "garbage": (lambda e, blob, p: b"not an export at all", "is not a jax.export artifact"),
    "truncated": (lambda e, blob, p: blob[: len(blob) // 2], "is not a jax.export artifact"),
    "host_callback": (_with_host_callback, "custom call 'xla_ffi_python_cpu_callback' (a host callback)"),
    "foreign_custom_call": (_with_foreign_custom_call, "custom call 'my_secret_kernel'"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_tampered_export_is_rejected(name, tmp_path, levels):
    fn, message = REJECTED[name]
    _rewrite(tmp_path, fn)
    with pytest.raises(ArtifactError) as e:
        kt.load_policy(tmp_path, 2, levels[1])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_export_with_wrong_signature_or_parameters_is_rejected(tmp_path, levels):
    _, static_params = levels
    act, params = mlp_policy(obs_size=139)
    kt.export_policy(act, params, 139, tmp_path / "obs")
    with pytest.raises(ArtifactError, match=r"takes observations float32\[2,b,139\], expected float32\[2,b,140\]"):
        kt.load_policy(tmp_path / "obs", 2, static_params)
    act, params = mlp_policy()
    kt.export_policy(act, params, 140, tmp_path / "seeds")
    with pytest.raises(ArtifactError, match=r"expected float32\[3,b,140\]"):
        kt.load_policy(tmp_path / "seeds", 3, static_params)  # exported for 2 seeds, evaluated with 3
    kt.export_policy(lambda p, o: jnp.tanh(o[..., :5]), {"w": jnp.ones((2, 1))}, 140, tmp_path / "dim")
    with pytest.raises(ArtifactError, match=r"expected float\[2,b,6\] \(continuous actions\)"):
        kt.load_policy(tmp_path / "dim", 2, static_params)
    # Parameters: NaN, and a file that disagrees with the module's signature.
    kt.export_policy(act, params, 140, tmp_path / "nan")
    with np.load(tmp_path / "nan" / kt.PARAMS_FILE) as d:
        arrays = {k: d[k] for k in d.files}
    arrays["p000"] = np.full_like(arrays["p000"], np.nan)
    np.savez(tmp_path / "nan" / kt.PARAMS_FILE, **arrays)
    with pytest.raises(ArtifactError, match="holds NaN or infinite values"):
        kt.load_policy(tmp_path / "nan", 2, static_params)
    np.savez(tmp_path / "nan" / kt.PARAMS_FILE, p000=arrays["p000"])
    with pytest.raises(ArtifactError, match="holds arrays"):
        kt.load_policy(tmp_path / "nan", 2, static_params)
    (tmp_path / "nan" / kt.EXPORT_FILE).unlink()
    with pytest.raises(ArtifactError, match="the harness exported no policy.jaxexport"):
        kt.load_policy(tmp_path / "nan", 2, static_params)


# ---------------------------------------------------------------- levels and variants


def test_variants_perturb_physics_within_bounds(levels):
    states, _ = levels
    same = kt.variants(jax.random.key(0), states, 3, kt.Variation())
    for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(states), strict=True):
        assert np.array_equal(np.asarray(a), np.repeat(np.asarray(b), 3, axis=0))
    varied = kt.variants(jax.random.key(0), states, 50, kt.Variation(gravity=0.2, actuators=0.2, velocity=0.5))
    g = np.asarray(varied.gravity[:, 1]) / -9.81
    assert 0.8 <= g.min() < 0.9 and 1.1 < g.max() <= 1.2
    level = LEVELS.index("s/h3_point_the_thruster")  # the one with a thruster
    power = np.asarray(varied.thruster.power).reshape(3, 50, -1)[level] / np.asarray(states.thruster.power)[level]
    assert 0.8 <= power.min() < 0.9 and 1.1 < power.max() <= 1.2
    fixed = np.asarray(varied.polygon.inverse_mass) == 0
    assert np.all(np.asarray(varied.polygon.velocity)[fixed] == 0)  # the floor and walls never move
    assert np.abs(np.asarray(varied.polygon.velocity)[~fixed]).max() > 0.1


def test_unknown_level_and_bad_variation_are_one_line_errors():
    with pytest.raises(ValueError, match=r"unknown Kinetix level 's/nope' \(known: s/h0_weak_thrust"):
        kt.load_levels(["s/nope"])
    with pytest.raises(ValueError, match="levels of different sizes cannot be mixed"):
        kt.load_levels(["s/h0_weak_thrust", "m/h0_unicycle"])
    with pytest.raises(ValueError, match=r"variation.gravity must be in \[0, 1\)"):
        kt.Variation(gravity=1.5)


# ---------------------------------------------------------------- the evaluator's solve rate


def manual_episode(level: str, action: int) -> bool:
    """Play one handmade level with a constant action, step by step with Kinetix's own env: solved?"""
    from kinetix.environment import ActionType, EnvParams, ObservationType, make_kinetix_env

    states, static_params = kt.load_levels([level])
    state = jax.tree.map(lambda x: x[0], states)
    params = EnvParams(max_timesteps=256)
    env = make_kinetix_env(ActionType.DISCRETE, ObservationType.SYMBOLIC_FLAT, None, params, static_params,
                           auto_reset=False)
    key = jax.random.key(0)
    _, state = env.reset(key, params, override_reset_state=state)
    for _ in range(256):
        _, state, _, done, info = env.step(key, state, action, params)
        if done:
            return bool(info["GoalR"])
    return False


@pytest.fixture(scope="module")
def constant_result(tmp_path_factory):
    """The evaluator's result for 3 seeds that play constant actions: 1 (solves h2 only), 0 (h6 only), invalid."""
    work = tmp_path_factory.mktemp("constant") / "work"
    export_constant(work / "artifacts", [1, 0, INVALID])
    return evaluator.evaluate(work, tiny_config(), {"eval_seed": 1, "episodes_per_level": 2}, 3)


def test_evaluator_solve_rate_matches_known_outcomes_and_a_manual_rollout(constant_result):
    # An action outside the space solves nothing, although the evaluator plays action 0 in its place, which
    # would solve h6.
    result = constant_result
    want = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    assert result["extra"]["handmade_solved"] == want
    assert result["extra"]["per_level_solve_rate"] == want  # no variation: variants are the levels themselves
    assert result["per_seed"]["solve_rate"] == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert result["extra"]["action_space"] == "discrete" and result["extra"]["levels"] == LEVELS
    # Kinetix's own step, outside any of our code, agrees on the two cases that decide the first seed.
    assert manual_episode("s/h2_one_wheel_car", 1) is True
    assert manual_episode("s/h6_unicycle_right", 1) is False


def test_figures_from_the_evaluators_results(constant_result, tmp_path):
    from pypdf import PdfReader

    from papers.figures import FigureError, template_figures

    info = {"extra": constant_result["extra"]}
    figures = template_figures(KINETIX, info, info, tmp_path)
    assert [f.label for f in figures] == ["fig:learning_curves", "fig:solve_rate_per_level"]
    for f in figures:
        assert len(PdfReader(f.path).pages) == 1 and "3 seeds" in f.caption and "95\\%" in f.caption
    assert "h2 = \\texttt{s/h2\\_one\\_wheel\\_car}" in figures[1].caption  # escaped for LaTeX
    other = {"extra": {**constant_result["extra"], "levels": LEVELS[::-1]}}
    with pytest.raises(FigureError, match="scored on different levels"):
        template_figures(KINETIX, other, info, tmp_path)
    with pytest.raises(FigureError, match="no extra.train_curves"):
        template_figures(KINETIX, {"extra": {k: v for k, v in info["extra"].items() if k != "train_curves"}}, info,
                         tmp_path)


@pytest.mark.slow
def test_oracle_finds_the_known_constant_actions():
    oracle = load_module(KINETIX / "oracle.py", "kinetix_oracle")
    levels, rates = oracle.constant_action_rates(tiny_config(), {"eval_seed": 1, "episodes_per_level": 1})
    assert levels == LEVELS and rates.shape == (oracle.NUM_ACTIONS, 3)
    h2, h3, h6 = range(3)
    assert rates[1, h2] == 1.0 and rates[0, h2] == 0.0 and oracle.ACTION_NAMES[1] == "motor 0 +"
    assert rates[0, h6] == 1.0 and rates[1, h6] == 0.0 and oracle.ACTION_NAMES[0] == "motor 0 -"
    assert rates[:, h3].max() == 0.0 and oracle.ACTION_NAMES[NOOP] == "no-op"


# ---------------------------------------------------------------- the harness's gate: bad candidates

AGENT = (KINETIX / "agent.py").read_text()

BAD_AGENTS = {
    "syntax": ("def make_network(:\n", "syntax error at line 1"),
    "import_error": ("import not_a_module\n", "failed to import: ModuleNotFoundError"),
    "no_network": (AGENT.replace("def make_network(", "def build("), "does not define a function 'make_network'"),
    "continuous_str": (AGENT.replace("CONTINUOUS = False", 'CONTINUOUS = "yes"'), "CONTINUOUS must be True or False"),
    "not_a_module": (AGENT.replace("return ActorCritic(num_actions, action_dim)", "return print"),
                     "make_network must return a flax.linen Module, not builtin_function_or_method"),
    "logits_shape": (AGENT.replace("mlp(x, self.num_actions, POLICY_INIT_SCALE)", "mlp(x, 5, POLICY_INIT_SCALE)"),
                     "policy_out = logits of shape (8, 11); got policy_out (8, 5)"),
    "nan_network": (AGENT.replace("value = mlp(x, 1, 1.0)[..., 0]", "value = mlp(x, 1, 1.0)[..., 0] * jnp.nan"),
                    "the network returned NaN or infinite values"),
    "huge": (AGENT.replace("HIDDEN = 128", "HIDDEN = 18000").replace("LAYERS = 2", "LAYERS = 1"),
             "at most 5,000,000 are allowed"),
    "vector_loss": (AGENT.replace("return total, {", "return total * jnp.ones(3), {"),
                    "its first value has shape (3,)"),
    "nan_gradient": (AGENT.replace("total = actor_loss", "total = jnp.sqrt(0.0 * actor_loss) + actor_loss"),
                     "NaN or infinite gradients"),
}


# The gate's settings: one level, the tiny run's batch shapes (8 environments; minibatches of 64).
GATE_CONFIG = {"levels": ["s/h0_weak_thrust"], "max_timesteps": 256,
               "ppo": {"total_timesteps": 256, "num_envs": 8, "num_steps": 16, "num_minibatches": 2}}


@pytest.fixture(scope="module")
def envs():
    """The gate's environment for each action head (CONTINUOUS False and True)."""
    return {continuous: kt.task_env(GATE_CONFIG, continuous) for continuous in (False, True)}


def trace_and_gate(agent: Path, folder: Path, envs: dict):
    """What a run does before training: the tracer exports the agent, the harness imports and gates the exports."""
    tracer.trace(str(agent), GATE_CONFIG, folder / "exports")
    traced = harness.load_agent(folder / "exports")
    harness.gate(traced, envs[traced.continuous], harness.ppo_config(GATE_CONFIG))
    return traced


@pytest.mark.parametrize("name", sorted(BAD_AGENTS))
def test_gate_rejects_bad_agent_with_one_line(name, tmp_path, envs, capsys):
    source, reason = BAD_AGENTS[name]
    path = tmp_path / "agent.py"
    path.write_text(source)
    with pytest.raises(SystemExit) as e:
        trace_and_gate(path, tmp_path, envs)
    assert e.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("HARNESS-FAIL: ") and reason in lines[0], lines


def test_gate_accepts_the_shipped_agent_and_candidates(tmp_path, envs):
    for path in [KINETIX / "agent.py", *sorted((KINETIX / "candidates").glob("*.py"))]:
        traced = trace_and_gate(path, tmp_path / path.stem, envs)
        assert traced.continuous == (path.stem == "continuous"), path.name


def test_harness_trains_the_budget_of_the_profile_applied(capsys):
    # The cpu profile is the budget every measured result used (formerly [config.budgets.cpu] with budget = "cpu").
    t = load_template(str(KINETIX))
    cpu = harness.ppo_config(t.with_profile("cpu").spec.config)
    assert cpu == ppo.PPOConfig(total_timesteps=204_800, num_envs=32, num_steps=64, num_minibatches=32, update_epochs=8,
                                gamma=0.995, gae_lambda=0.9, max_grad_norm=1.0, lr=5e-5, anneal_lr=False,
                                shuffle_envs=True)
    gpu = harness.ppo_config(t.with_profile("gpu").spec.config)
    assert gpu == dataclasses.replace(cpu, total_timesteps=50_000_000, num_envs=2048)
    assert t.with_profile("gpu").spec.seeds == 16 and "budget" not in t.spec.config and "budgets" not in t.spec.config
    with pytest.raises(SystemExit) as e:
        harness.ppo_config({"ppo": {"total_timestep": 1}})
    assert e.value.code == 3 and "HARNESS-FAIL: template.toml [config.ppo]: TypeError" in capsys.readouterr().err


def test_bad_candidate_through_the_sandbox_is_a_failed_run(tmp_path):
    templates = tmp_path / "t"
    write_tiny_kinetix(templates)
    bad = tmp_path / "agent.py"
    bad.write_text(BAD_AGENTS["logits_shape"][0])
    r = scientist("eval", "--template", "kinetix", "--templates-dir", str(templates), "--home", str(tmp_path / "h"),
                  "--candidate", str(bad), "--sandbox", "bwrap")
    assert r.code == 1, r.text
    failed = [line for line in r.err.splitlines() if "failed:" in line]
    assert len(failed) == 1 and "logits of shape (8, 11)" in r.err and "Traceback" not in r.text


# ---------------------------------------------------------------- search space


def test_shipped_files_are_rendered_known_members():
    known = space.known()
    assert space.render(known[space.BASELINE])["agent.py"] == AGENT
    for path in (KINETIX / "candidates").glob("*.py"):
        assert space.render(known[path.stem])["agent.py"] == path.read_text(), path.name


def test_random_members_are_valid_and_pass_the_gate(tmp_path, envs):
    rng = random.Random(7)
    pool = list(space.known().values())
    genomes = []
    for i in range(60):
        g = (space.sample(rng) if i % 3 == 0 else space.mutate(rng.choice(pool), rng) if i % 3 == 1
             else space.crossover(rng.choice(pool), rng.choice(pool), rng))
        space.validate(g)
        assert json.loads(json.dumps(g)) == g
        pool.append(g)
        genomes.append(g)
    assert all(space.mutate(g, rng) != g for g in genomes[:20])
    with pytest.raises(ValueError, match="hidden must be one of"):
        space.validate({**genomes[0], "hidden": 100})
    for i, g in enumerate(genomes[:3] + [{**genomes[0], "continuous": True, "layer_norm": True, "activation": "gelu"}]):
        path = tmp_path / f"member{i}" / "agent.py"
        path.parent.mkdir()
        path.write_text(space.render(g)["agent.py"])
        traced = trace_and_gate(path, path.parent, envs)
        assert traced.continuous == g["continuous"]
        assert space.describe(g).startswith("continuous" if traced.continuous else "discrete")


# ---------------------------------------------------------------- the whole run, through the real sandbox


@pytest.mark.slow
def test_scientist_eval_kinetix_through_bwrap(tmp_path):
    templates = tmp_path / "t"
    write_tiny_kinetix(templates)
    out = tmp_path / "run"
    r = scientist("eval", "--template", "kinetix", "--templates-dir", str(templates), "--home", str(tmp_path / "h"),
                  "--sandbox", "bwrap", "--out", str(out), timeout=900)
    assert r.code == 0, r.text
    info = json.loads((out / "final_info.json").read_text())
    m = info["metrics"]["solve_rate"]
    assert info["n"] == 2 and len(m["values"]) == 2 and all(0.0 <= v <= 1.0 for v in m["values"])
    extra = info["extra"]
    assert extra["levels"] == LEVELS and np.shape(extra["per_level_solve_rate"]) == (2, 3)
    assert np.shape(extra["train_curves"]["solved"]) == (2, 2)
    assert (out / "work" / "artifacts" / kt.EXPORT_FILE).is_file()


TAMPER = AGENT + """

import atexit
import os


@atexit.register
def _overwrite():
    os.makedirs("{folder}", exist_ok=True)
    with open("{folder}/policy.jaxexport", "wb") as f:
        f.write(b"I solved every level")
"""


@pytest.mark.slow
def test_candidate_that_tampers_with_the_harness_export_changes_nothing(tmp_path):
    # The candidate runs only in the tracer's sandbox, so the policy it overwrites at exit is in that sandbox's
    # folder, which the harness never sees: the run trains and is scored as usual.
    templates = tmp_path / "t"
    write_tiny_kinetix(templates)
    tamper = tmp_path / "agent.py"
    tamper.write_text(TAMPER.replace("{folder}", "artifacts"))
    out = tmp_path / "run"
    r = scientist("eval", "--template", "kinetix", "--templates-dir", str(templates), "--home", str(tmp_path / "h"),
                  "--candidate", str(tamper), "--sandbox", "bwrap", "--out", str(out), timeout=900)
    assert r.code == 0, r.text
    assert (out / "trace" / "artifacts" / "policy.jaxexport").read_bytes() == b"I solved every level"
    assert (out / "work" / "artifacts" / kt.EXPORT_FILE).read_bytes() != b"I solved every level"
    info = json.loads((out / "final_info.json").read_text())
    assert all(0.0 <= v <= 1.0 for v in info["metrics"]["solve_rate"]["values"])


def test_candidate_that_tampers_with_its_exports_is_refused(tmp_path):
    # What it can reach is its own exports: the harness checks them before it runs any, and refuses these.
    templates = tmp_path / "t"
    write_tiny_kinetix(templates)
    tamper = tmp_path / "agent.py"
    tamper.write_text(TAMPER.replace("{folder}", "exports"))
    r = scientist("eval", "--template", "kinetix", "--templates-dir", str(templates), "--home", str(tmp_path / "h"),
                  "--candidate", str(tamper), "--sandbox", "bwrap", timeout=900)
    assert r.code == 1, r.text
    assert "the traced agent was refused: policy.jaxexport is not a jax.export artifact" in r.err
    assert "Traceback" not in r.text

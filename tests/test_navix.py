"""The navix template end to end: `scientist eval` through bwrap at a tiny size, a hostile candidate, the evaluator.

The sandboxed runs come from conftest's `navix_eval` (one `scientist eval` per pytest run): the shipped agent, the
same agent with attacks in its import (hostile), and a candidate the tracer must refuse. The evaluator's own checks
(exports of the wrong signature, integer actions) and the success rate's rollout run here without a sandbox.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, copy_template

from jax_workloads import navix_tasks as nt
from jax_workloads import policy_export
from jax_workloads.sealed import ArtifactError

NAVIX = ROOT / "templates" / "navix"
TINY_ENV = "Navix-Empty-5x5-v0"  # the smallest program to compile: the tests' suite of one
TINY = {  # a sandboxed run in well under a minute on 2 cores, nearly all of it compilation
    "seeds": "2",
    "time_s": "300",
    "eval_time_s": "200",
    "envs": json.dumps([TINY_ENV]),
    "total_timesteps": "256",
    "num_envs": "4",
    "num_steps": "32",
    "num_minibatches": "2",
    "episodes_per_env": "4",
}
BAD = {"continuous": (NAVIX / "agent.py").read_text() + "\nCONTINUOUS = True\n"}

ATTACKS = '''

# ---- Everything below runs when the module is imported: the attacks. The agent above is the baseline's.
import atexit  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util as _util  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax_workloads.policy_export as _export  # noqa: E402
import jax_workloads.ppo as _ppo  # noqa: E402

FORGED = b"forged by the candidate"
# Its own folder (the tracer's), then the harness's work folder beside it, were it reachable.
TARGETS = ["artifacts/0/policy_params.npz", "exports/forged.jaxexport", "../../work/artifacts/0/policy_params.npz",
           "../work/artifacts/0/policy.jaxexport"]


def _log(attack, **what):
    with open("attacks.jsonl", "a") as f:
        f.write(json.dumps({"attack": attack, **what}) + "\\n")


# (a) The shared training and export code: twice the epochs, zeroed policy parameters.
_make_train, _export_policy = _ppo.make_train, _export.export_policy
_ppo.make_train = lambda config, *a, **k: _make_train(
    dataclasses.replace(config, update_epochs=2 * config.update_epochs), *a, **k)
_export.export_policy = lambda act, params, *a: _export_policy(act, {k: 0 * v for k, v in params.items()}, *a)
_log("rebind", make_train=_ppo.make_train.__name__)


# (b) Forge artifacts once the tracer is done: a non-daemon thread, then an exit handler.
def _forge(attack):
    wrote, refused = [], []
    for target in TARGETS:
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_bytes(FORGED)
            wrote.append(target)
        except OSError:
            refused.append(target)
    _log(attack, wrote=wrote, refused=refused)


def _later():
    time.sleep(2.0)
    _forge("thread")


threading.Thread(target=_later, daemon=False).start()
atexit.register(_forge, "atexit")

# (c) The secrets: [private] in config.json, data/ files. (d) The harness: import it to rebind its functions.
_text = Path("config.json").read_text()
_log("held_out", config_keys=sorted(json.loads(_text)), private_seen="eval_seed" in _text or "episodes" in _text,
     data=Path("data").exists())
_harness = next((p for p in (Path("harness.py"), Path("../harness.py"), Path("../../harness.py")) if p.is_file()), None)
if _harness is not None:
    _spec = _util.spec_from_file_location("harness", _harness)
    _module = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _module.main = lambda: None
_log("harness", found=str(_harness))
'''


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_navix(dest: Path) -> Path:
    """Copy the navix template to dest/navix at TINY settings."""
    return copy_template(dest, "navix", TINY)


@pytest.fixture(scope="module")
def runs(request):
    """The shipped agent, the hostile one and the refused one, through `scientist eval --sandbox bwrap` (tiny)."""
    _, _, out, r = request.getfixturevalue("navix_eval")
    assert "baseline: failed" not in r.err and "hostile: failed" not in r.err, r.text
    return out, r


def test_eval_through_bwrap_scores_the_baseline(runs):
    out, r = runs
    info = json.loads((out / "baseline" / "final_info.json").read_text())
    for metric in ("success_rate", "success_rate_greedy"):
        rates = info["metrics"][metric]["values"]
        assert len(rates) == 2 and all(0.0 <= v <= 1.0 for v in rates), metric
    extra = info["extra"]
    assert extra["envs"] == [TINY_ENV] and extra["episodes_per_env"] == 4
    assert np.asarray(extra["per_env_success_rate"]).shape == (2, 1)
    assert np.asarray(extra["train_curves"][0]["return"]).shape == (2, 2)  # 2 seeds, 2 updates
    assert "success_rate" in r.out


def test_refused_candidate_is_a_failed_run_with_one_line(runs):
    _, r = runs
    assert "continuous: failed" in r.err and "CONTINUOUS must be False" in r.err


def test_hostile_import_scores_exactly_as_the_baseline(runs):
    out, _ = runs
    base, hostile = (json.loads((out / name / "final_info.json").read_text()) for name in ("baseline", "hostile"))
    for metric in ("success_rate", "success_rate_greedy", "return"):
        assert hostile["metrics"][metric]["values"] == base["metrics"][metric]["values"], metric
    assert hostile["extra"]["train_curves"] == base["extra"]["train_curves"]  # trained alike, update by update


def test_the_attacks_ran_in_the_tracer_only_and_reached_nothing(runs):
    out, _ = runs
    trace, work = out / "hostile" / "trace", out / "hostile" / "work"
    attacks = {a["attack"]: a for a in map(json.loads, (trace / "attacks.jsonl").read_text().splitlines())}
    assert set(attacks) == {"rebind", "thread", "atexit", "held_out", "harness"}, attacks
    for kind in ("thread", "atexit"):  # only the tracer's own folder was writable
        assert set(attacks[kind]["refused"]) >= {"../../work/artifacts/0/policy_params.npz"}, attacks[kind]
    assert attacks["held_out"] == {"attack": "held_out", "config_keys": ["config", "seeds"], "private_seen": False,
                                   "data": False}
    # The tracer's sandbox holds a copy of the harness; importing it there and rebinding its main changes nothing:
    # the harness runs in a sandbox of its own (the scores above are the baseline's).
    assert attacks["harness"]["found"] == "harness.py"
    assert not (work / "attacks.jsonl").exists()
    params = work / "artifacts" / "0" / policy_export.PARAMS_FILE
    if params.is_file():  # the run folder may drop work/ once scored
        assert params.read_bytes() != b"forged by the candidate"


# ---------------------------------------------------------------- the evaluator's side, without a sandbox


def mlp_policy(obs_size: int, seeds: int = 2, num_actions: int = 7):
    """A linear policy per seed: obs [S, b, obs_size] -> logits [S, b, num_actions]."""
    keys = jax.random.split(jax.random.key(0), seeds)
    params = {"w": jax.vmap(lambda k: jax.random.normal(k, (obs_size, num_actions)))(keys)}

    def logits(params, obs):
        return jnp.einsum("sbo,soa->sba", obs, params["w"])

    return logits, params


def test_exported_policy_round_trips_and_plays_the_evaluators_layouts(tmp_path):
    spec = nt.action_spec(TINY_ENV)
    logits, params = mlp_policy(spec.obs_size)
    policy_export.export_policy(logits, params, spec.obs_size, tmp_path)
    policy, got = policy_export.load_policy(tmp_path, 2, lambda c: nt.action_spec(TINY_ENV, c))
    assert got == spec
    layouts, sample_key = nt.held_out_keys({"eval_seed": 7}, 0, 3)
    greedy = jax.jit(nt.make_success_rate(TINY_ENV, policy, 2))(layouts)
    sampled = jax.jit(nt.make_success_rate(TINY_ENV, policy, 2, sample_key=sample_key))(layouts)
    assert greedy[0].shape == sampled[0].shape == (2, 3)
    # The greedy episodes, played one by one with NAVIX's own step: the evaluator's rollout is NAVIX's.
    import navix

    env = navix.make(TINY_ENV)
    step = jax.jit(env._step)
    for s, e in ((0, 0), (1, 2)):  # two of the six episodes: NAVIX's step runs eagerly here
        if True:
            timestep, reached = env.reset(layouts[e]), False
            for _ in range(nt.MAX_STEPS):
                obs = jnp.ravel(timestep.observation).astype(jnp.float32)[None, None]
                action = jnp.argmax(logits(jax.tree.map(lambda x, s=s: x[s:s + 1], params), obs)[0, 0])
                timestep = step(timestep, action)
                if timestep.is_done():
                    reached = bool(timestep.state.events.goal_reached.happened & timestep.is_termination())
                    break
            assert bool(greedy[0][s, e]) == reached


def test_evaluator_refuses_integer_actions_and_other_observation_sizes(tmp_path):
    spec = nt.action_spec(TINY_ENV)
    logits, params = mlp_policy(spec.obs_size)
    policy_export.export_policy(lambda p, o: jnp.argmax(logits(p, o), -1).astype(jnp.int32), params, spec.obs_size,
                                tmp_path / "actions")
    with pytest.raises(ArtifactError, match="logits"):
        policy_export.load_policy(tmp_path / "actions", 2, lambda c: nt.action_spec(TINY_ENV, c))
    logits, params = mlp_policy(spec.obs_size + 3)
    policy_export.export_policy(logits, params, spec.obs_size + 3, tmp_path / "size")
    with pytest.raises(ArtifactError, match="observations"):
        policy_export.load_policy(tmp_path / "size", 2, lambda c: nt.action_spec(TINY_ENV, c))


def test_unknown_environment_is_a_one_line_error():
    with pytest.raises(ValueError, match="no environment"):
        nt.task_envs({"envs": ["Navix-Nowhere-v0"]})
    with pytest.raises(ValueError, match="non-empty list"):
        nt.task_envs({"envs": "Navix-Empty-5x5-v0"})


def test_shipped_files_are_rendered_known_members():
    space = load_module(NAVIX / "search_space.py", "navix_search_space")
    assert space.render(space.known()["baseline"])["agent.py"] == (NAVIX / "agent.py").read_text()
    for path in (NAVIX / "candidates").glob("*.py"):
        assert space.render(space.known()[path.stem])["agent.py"] == path.read_text(), path.name

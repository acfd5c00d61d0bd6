"""The synthenv template end to end: `scientist eval` through bwrap at a tiny size, a hostile candidate, the evaluator.

The sandboxed runs come from conftest's `synthenv_eval` (one `scientist eval` per pytest run): the shipped bandit, a
shipped candidate (candidates/ppo_only.py), the shipped bandit with attacks in its import and a designed init and
es_update the harness must ignore (hostile), and two candidates the tracer must refuse (one meta-trains with the
evaluator's held-out algorithm, one sets SNES's sigma outside its range). The harness's own weighting of hostile
fitness shapings and the evaluator's checks of the artifacts run here without a sandbox.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, copy_template

from jax_workloads import synthenv as se
from jax_workloads.sealed import ArtifactError, export_arrays

# The fixture's one `scientist eval` compiles the meta-training's programs once (the baseline's run; the candidate's
# and the hostile one's caches start as copies of it, so they compile only the steps that hold the candidate's
# functions) and the evaluator's two: 246 s on 2 cores at a load of 2-3 (1478 s under 11-17 with the old one-program
# harness), beyond the suite's 600 s per test under load.
pytestmark = pytest.mark.timeout(2700)

SYNTHENV = ROOT / "templates" / "synthenv"
CANDIDATE = "ppo_only"  # the shipped candidate the fixture evaluates beside the baseline
TINY = {  # a sandboxed run in about a minute on 2 idle cores, nearly all of it compilation
    "seeds": "2",
    "time_s": "600",
    "eval_time_s": "600",
    "total_timesteps": "1000",
    "ppo_epochs": "2",
    "ppo_minibatches": "2",
    "dqn_buffer": "200",
    "dqn_fill": "100",
    "dqn_batch": "20",
    "hidden": "16",
    "layers": "1",
    "population": "4",
    "generations": "2",
    "fitness_episodes": "2",
    "max_horizon": "50",
    "agents_per_algorithm": "2",
    "episodes": "2",
}
SHIPPED = (SYNTHENV / "bandit.py").read_text()
BAD = {"held_out": SHIPPED.replace('ALGORITHMS = ("ppo", "dqn")', 'ALGORITHMS = ("ppo", "reinforce")'),
       # a step size far outside its declared range: a few such steps could carry the mean anywhere
       "out_of_range": SHIPPED.replace("SIGMA_INIT = 0.05 ", "SIGMA_INIT = 50.0 ")}

ATTACKS = '''

# ---- Everything below runs when the module is imported: the attacks. The bandit above is the baseline's.
import atexit  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util as _util  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax_workloads.sealed as _sealed  # noqa: E402
import jax_workloads.synthenv as _se  # noqa: E402

FORGED = b"forged by the candidate"
# Its own folder (the tracer's), then the harness's work folder beside it, were it reachable.
TARGETS = ["artifacts/bandit.npz", "exports/forged.jaxexport", "../../work/artifacts/bandit.npz",
           "../work/artifacts/family.json"]


def _log(attack, **what):
    with open("attacks.jsonl", "a") as f:
        f.write(json.dumps({"attack": attack, **what}) + "\\n")


# (a) The shared meta-training and export code: ten times the generations, zeroed bandit parameters.
_make_meta_train, _export_arrays = _se.make_meta_train, _sealed.export_arrays
_se.make_meta_train = lambda family, algorithms, inner, meta, strategy, fns: _make_meta_train(
    family, algorithms, inner, dataclasses.replace(meta, generations=10 * meta.generations), strategy, fns)
_sealed.export_arrays = lambda path, arrays: _export_arrays(path, {k: 0 * v for k, v in arrays.items()})
_log("rebind", make_meta_train=_se.make_meta_train.__name__)


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
_log("held_out", config_keys=sorted(json.loads(_text)), private_seen="_seed" in _text.replace("train_seed", ""),
     data=Path("data").exists())
_harness = next((p for p in (Path("harness.py"), Path("../harness.py"), Path("../../harness.py")) if p.is_file()), None)
if _harness is not None:
    _spec = _util.spec_from_file_location("harness", _harness)
    _module = _util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _module.main = lambda: None
_log("harness", found=str(_harness))


# (e) A designed bandit: the old contract's init and es_update, setting the mean by hand (a constant bandit whose
# reward would pay for a chosen action) whatever the population's fitness. The harness owns both and never calls them.
def init(key, obs_size, num_actions):
    return {name: jnp.full(shape, 0.5) for name, shape in _se.Family("Acrobot-v1", hidden=HIDDEN).shapes.items()}


def es_init(mean):
    return jnp.zeros_like(mean)


def es_update(mean, std, z, fitness, generation):
    return jnp.full_like(mean, 0.5), jnp.zeros_like(std)


_log("designed", defined=[f.__name__ for f in (init, es_init, es_update)])
'''


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bandit = load_module(SYNTHENV / "bandit.py", "synthenv_bandit")


def write_tiny_synthenv(dest: Path) -> Path:
    """Copy the synthenv template to dest/synthenv at TINY settings."""
    return copy_template(dest, "synthenv", TINY)


@pytest.fixture(scope="module")
def runs(request):
    """The shipped bandit, a shipped candidate, the hostile one and the refused ones, through bwrap (tiny)."""
    _, _, out, r = request.getfixturevalue("synthenv_eval")
    for name in ("baseline", CANDIDATE, "hostile"):
        assert f"{name}: failed" not in r.err, r.text
    return out, r


def final_info(out: Path, name: str) -> dict:
    return json.loads((out / name / "final_info.json").read_text())


def test_eval_through_bwrap_scores_the_baseline_and_a_candidate(runs):
    out, r = runs
    for name in ("baseline", CANDIDATE):
        info = final_info(out, name)
        for metric in ("return", "return_ppo", "return_reinforce"):
            values = info["metrics"][metric]["values"]
            assert len(values) == 2 and all(-500.0 <= v <= 0.0 for v in values), (name, metric)
        extra = info["extra"]
        assert extra["env"] == "Acrobot-v1" and extra["agents_per_algorithm"] == 2 and extra["generations"] == 2
        assert np.asarray(extra["per_agent_return"]["reinforce"]).shape == (2, 2)
        assert np.asarray(extra["meta_curves"]["fitness_mean"]).shape == (2, 2)
        assert np.all(np.asarray(extra["meta_curves"]["horizon"]) == 50)  # 500 clipped to the tiny max_horizon
    assert "return" in r.out


def test_refused_candidates_are_failed_runs_with_one_line(runs):
    _, r = runs
    assert "held_out: failed" in r.err and "REINFORCE is the evaluator's held-out algorithm" in r.err
    assert "out_of_range: failed" in r.err and "SIGMA_INIT 50.0 is not a number in [0.005, 0.5]" in r.err


def test_hostile_import_scores_exactly_as_the_baseline(runs):
    out, _ = runs
    base, hostile = final_info(out, "baseline"), final_info(out, "hostile")
    for metric in ("return", "return_ppo", "return_reinforce"):
        assert hostile["metrics"][metric]["values"] == base["metrics"][metric]["values"], metric
    # Meta-trained alike, generation by generation: the rebinding of the shared code reached nothing, and the
    # designed init / es_update (a constant bandit, std 0) were never called: the std curve is the harness's SNES.
    assert hostile["extra"]["meta_curves"] == base["extra"]["meta_curves"]
    assert np.allclose(np.asarray(base["extra"]["meta_curves"]["std_mean"])[:, 0], 0.05, rtol=1e-6)


def test_the_attacks_ran_in_the_tracer_only_and_reached_nothing(runs):
    out, _ = runs
    trace, work = out / "hostile" / "trace", out / "hostile" / "work"
    attacks = {a["attack"]: a for a in map(json.loads, (trace / "attacks.jsonl").read_text().splitlines())}
    assert set(attacks) == {"rebind", "thread", "atexit", "held_out", "harness", "designed"}, attacks
    for kind in ("thread", "atexit"):  # only the tracer's own folder was writable
        assert "../../work/artifacts/bandit.npz" in attacks[kind]["refused"], attacks[kind]
    assert attacks["held_out"] == {"attack": "held_out", "config_keys": ["config", "seeds"], "private_seen": False,
                                   "data": False}
    assert attacks["harness"]["found"] == "harness.py"
    assert not (work / "attacks.jsonl").exists()
    bandit = work / "artifacts" / "bandit.npz"
    if bandit.is_file():  # the run folder may drop work/ once scored
        assert bandit.read_bytes() != b"forged by the candidate"


# ---------------------------------------------------------------- the evaluator's side, without a sandbox


def write_artifacts(art: Path, family: dict, size: int, seeds: int = 2, generations: int = 2) -> None:
    (art / "family.json").parent.mkdir(parents=True, exist_ok=True)
    (art / "family.json").write_text(json.dumps(family))
    export_arrays(art / "bandit.npz", {"params": np.zeros((seeds, size), np.float32)})
    export_arrays(art / "curves.npz", {k: np.zeros((seeds, generations), np.float32)
                                       for k in ("fitness_mean", "fitness_max", "horizon", "std_mean")})


def test_evaluator_checks_the_family_and_the_parameters_shape(tmp_path):
    evaluate = load_module(SYNTHENV / "evaluate.py", "synthenv_evaluate")
    config = {"env": "Acrobot-v1", "meta": {"population": 4, "generations": 2, "fitness_episodes": 2,
                                            "max_horizon": 50}}
    good = {"latent": "normal", "hidden": 32, "activation": "relu"}
    size = se.Family("Acrobot-v1", **good).size
    write_artifacts(tmp_path / "ok", good, size)
    family, params, _ = evaluate.load_bandits(tmp_path / "ok", config, 2)
    assert family.hidden == 32 and params.shape == (2, size)
    write_artifacts(tmp_path / "wide", {**good, "hidden": 4096}, size)
    with pytest.raises(ArtifactError, match="not an integer in"):
        evaluate.load_bandits(tmp_path / "wide", config, 2)
    write_artifacts(tmp_path / "code", {**good, "reward": "lambda s, a: 0"}, size)
    with pytest.raises(ArtifactError, match="unknown family setting"):
        evaluate.load_bandits(tmp_path / "code", config, 2)
    write_artifacts(tmp_path / "size", good, size + 1)
    with pytest.raises(ArtifactError, match="shape"):
        evaluate.load_bandits(tmp_path / "size", config, 2)


def step(shape, mean, std, z, fitness):
    """One generation's update as make_meta_train takes it: the harness's weighting of shape's weights, its SNES
    step; (mean, std, weights, finite)."""
    w, finite = se.shaped_weights(shape, jnp.asarray(fitness, jnp.float32), jnp.int32(0))
    return (*se.snes_step(mean, std, z, w, 1.0), w, finite)


def test_the_harnesss_generation_programs_compute_the_one_program_meta_training():
    """run_meta_train (the harness: each generation's steps as programs of their own, the fitness ones free of the
    candidate's functions) gives every seed what make_meta_train (one program) gives it, algorithms in turn.
    Cheap fitness functions stand in for inner training (the same code on both paths)."""
    family = se.Family("Acrobot-v1", latent="normal", hidden=4, activation="relu")
    meta = se.Meta(population=6, generations=5, fitness_episodes=1, max_horizon=50)
    fns = se.MetaFns(bandit.shape, bandit.sample_hparams, bandit.horizon)
    strategy = se.Strategy(bandit.SIGMA_INIT, bandit.LR_MEAN)

    def cheap(offset):
        def fitness(members, keys, hp, h):
            noise = jax.vmap(lambda k: jax.random.normal(k))(keys)
            return -jnp.sum((members - 0.1) ** 2, -1) + hp[:, 0] + offset * h + 0.01 * noise
        return fitness

    args = (family, ("ppo", "dqn"), None, meta, strategy, fns)
    keys = jax.random.split(jax.random.key(3), 2)
    one = jax.jit(jax.vmap(se.make_meta_train(*args, fitness=(cheap(0.0), cheap(1.0)))))(keys)
    seen = []
    loop = se.run_meta_train(*args, keys, progress=seen.append, fitness=(cheap(0.0), cheap(1.0)))
    assert seen == list(range(meta.generations)) and set(loop["curves"]) == set(one["curves"])
    np.testing.assert_allclose(loop["params"], one["params"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loop["finite"], one["finite"])
    for k in one["curves"]:
        np.testing.assert_allclose(loop["curves"][k], one["curves"][k], rtol=1e-5, atol=1e-5, err_msg=k)
    fit = np.asarray(loop["curves"]["fitness_mean"])  # the second algorithm's generations carry its offset
    assert np.all(fit[:, 1::2] > fit[:, 0::2][:, :2] + 40)  # h = max_horizon, 50


def test_hostile_shapes_cannot_steer_the_mean():
    p, d = 8, 5
    rng = np.random.default_rng(0)
    mean, std = jnp.asarray(rng.normal(size=d), jnp.float32), jnp.full(d, 0.05)
    z = jnp.asarray(rng.normal(size=(p, d)), jnp.float32)
    fitness = np.array([-500.0, -120.0, -500.0, -300.0, -500.0, -90.0, -480.0, -500.0])
    perm = rng.permutation(p)

    # Ignores the fitness and picks a member by its index (the last one, whose z a candidate replaying the harness's
    # public key schedule could know): it gets the worst place instead, a tied one shared among the four at -500.
    pick_last = lambda f, g: jnp.zeros_like(f).at[-1].set(1.0)  # noqa: E731
    distinct = fitness + 0.1 * np.arange(p)  # member 0 is the worst
    new_mean, _, w, finite = step(pick_last, mean, std, z, distinct)
    assert bool(finite) and np.array_equal(w, np.eye(p)[0])
    np.testing.assert_allclose(new_mean, mean + std * z[0], rtol=1e-6)
    _, _, w, _ = step(pick_last, mean, std, z, fitness)  # the last place ties at -500 with three others: the
    assert not np.any(w)  # group takes its first place's weight, 0
    # The step is a function of the members' (fitness, z) alone: reordering the population changes nothing.
    for shape in (pick_last, bandit.shape, lambda f, g: jnp.arange(f.shape[0], dtype=jnp.float32)):
        a, b = step(shape, mean, std, z, fitness), step(shape, mean, std, z[perm], fitness[perm])
        np.testing.assert_allclose(a[0], b[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a[1], b[1], rtol=1e-6, atol=1e-7)

    # Huge weights are rescaled onto sum |w| = 2: one step moves a coordinate by at most 2 * std * max |z|.
    huge_mean, huge_std, w, finite = step(lambda f, g: 1e30 * bandit.shape(f, g), mean, std, z, fitness)
    assert bool(finite) and np.isclose(float(jnp.abs(w).sum()), se.WEIGHT_BOUND, rtol=1e-5)
    base_w, _ = se.shaped_weights(bandit.shape, jnp.asarray(fitness, jnp.float32), jnp.int32(0))
    np.testing.assert_allclose(w, base_w * se.WEIGHT_BOUND / jnp.abs(base_w).sum(), rtol=1e-5)
    assert np.all(np.abs(huge_mean - mean) <= se.WEIGHT_BOUND * std * np.abs(z).max(0) + 1e-6)
    assert np.all(np.isfinite(huge_std))

    # NaN or infinite weights: no step, and the generation is flagged (the harness then refuses the run).
    for bad in (jnp.nan, jnp.inf):
        nan_mean, nan_std, w, finite = step(lambda f, g, b=bad: f * 0 + b, mean, std, z, fitness)
        assert not bool(finite) and not np.any(w)
        np.testing.assert_array_equal(nan_mean, mean)
        np.testing.assert_array_equal(nan_std, std)


def test_harness_refuses_nan_weights_and_out_of_range_settings_with_one_line(capsys):
    harness = load_module(SYNTHENV / "harness.py", "synthenv_harness")
    meta = se.Meta(population=4, generations=2, fitness_episodes=2, max_horizon=50)
    nan_shape = lambda f, g: f * jnp.nan  # noqa: E731
    with pytest.raises(SystemExit):
        harness.gate(se.MetaFns(nan_shape, bandit.sample_hparams, bandit.horizon), meta)
    assert "shape returned NaN or infinite values on the probe" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        harness.gate(se.MetaFns(lambda f, g: f[:2], bandit.sample_hparams, bandit.horizon), meta)
    assert "shape must return a float array of shape (4,)" in capsys.readouterr().err
    harness.gate(se.MetaFns(bandit.shape, bandit.sample_hparams, bandit.horizon), meta)  # the baseline passes
    # The manifest's SNES settings, untrusted data: the declared ranges, numbers only, nothing else.
    assert se.strategy_from({"sigma_init": 0.05, "lr_mean": 1}) == se.Strategy(0.05, 1.0)
    for values, reason in (({"sigma_init": 50.0, "lr_mean": 1.0}, "SIGMA_INIT 50.0 is not a number in [0.005, 0.5]"),
                           ({"sigma_init": 0.05, "lr_mean": 0.0}, "LR_MEAN 0.0 is not a number in [0.1, 2]"),
                           ({"sigma_init": True, "lr_mean": 1.0}, "SIGMA_INIT True"),
                           ({"sigma_init": "0.05", "lr_mean": 1.0}, "SIGMA_INIT '0.05'"),
                           ({"sigma_init": 0.05, "lr_mean": 1.0, "mean": [0.5]}, "must be an object of")):
        with pytest.raises(ValueError, match=re.escape(reason)):
            se.strategy_from(values)
    # What the harness loads of the candidate: no function that could set or move the bandit's parameters.
    trace = load_module(SYNTHENV / "trace.py", "synthenv_trace")
    assert set(harness.NAMES) == set(trace.FUNCTIONS) == {"shape", "sample_hparams", "horizon"}


def test_unknown_environment_is_a_one_line_error():
    with pytest.raises(ValueError, match="not one of"):
        se.Family("Pong-v0")


def test_search_space_provides_the_interface_the_evolve_proposer_uses():
    from base.template import load_template
    from scientist.proposers.evolve import EvolveProposer, load_search_space

    space = load_search_space(load_template(str(SYNTHENV)))  # check_search_space on load
    assert space.BASELINE in space.known()
    idea = EvolveProposer(space, "max", seed=0, baseline_metric=-368.0).next_idea(0, [])
    assert idea.title.startswith("Evolved synthetic bandit: ") and space.GOAL in idea.hypothesis


def test_shipped_files_are_rendered_known_members():
    space = load_module(SYNTHENV / "search_space.py", "synthenv_search_space")
    # the space's step sizes are the ranges the tracer and the harness accept
    assert (space.RANGES["sigma_init"].lo, space.RANGES["sigma_init"].hi) == se.SIGMA_INIT_RANGE
    assert (space.RANGES["lr_mean"].lo, space.RANGES["lr_mean"].hi) == se.LR_MEAN_RANGE
    assert space.render(space.known()["baseline"])["bandit.py"] == SHIPPED
    for path in (SYNTHENV / "candidates").glob("*.py"):
        assert space.render(space.known()[path.stem])["bandit.py"] == path.read_text(), path.name
    assert (SYNTHENV / "candidates" / f"{CANDIDATE}.py").is_file()


def synthetic_info(seeds: int, rng: np.random.Generator) -> dict:
    """A final_info.json-shaped dict holding what figures.py reads, with `seeds` seeds."""
    curves = {k: rng.uniform(-500, -100, (seeds, 6)).tolist() for k in ("fitness_mean", "fitness_max", "std_mean")}
    return {"extra": {"env": "Acrobot-v1", "agents_per_algorithm": 4,
                      "meta_curves": {**curves, "horizon": np.full((seeds, 6), 500.0).tolist()},
                      "per_agent_return": {a: rng.uniform(-500, -80, (seeds, 4)).tolist()
                                           for a in ("ppo", "reinforce")}}}


def test_figures_from_synthetic_results(tmp_path):
    import matplotlib.pyplot as plt
    from pypdf import PdfReader

    from papers.figures import FigureError, template_figures

    rng = np.random.default_rng(0)
    for best_n, base_n in ((3, 3), (1, 4)):
        figs = template_figures(SYNTHENV, synthetic_info(best_n, rng), synthetic_info(base_n, rng),
                                tmp_path / f"{best_n}_{base_n}")
        assert [f.label for f in figs] == ["fig:meta_training", "fig:return_per_algorithm"]
        for fig in figs:
            assert len(PdfReader(fig.path).pages) == 1
            assert "95\\%" in fig.caption and "Acrobot-v1" in fig.caption and "_" not in fig.caption.replace(
                "\\_", "")
        captions = " ".join(f.caption for f in figs)
        assert ("3 seeds" if best_n == base_n else "1 seed (best candidate) and 4 seeds") in captions
    with pytest.raises(FigureError, match="template synthenv: .*final_info.json has no extra"):
        template_figures(SYNTHENV, {"extra": {}}, synthetic_info(3, rng), tmp_path / "missing")
    assert plt.get_fignums() == []

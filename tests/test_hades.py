"""The hades template end to end: `scientist eval` through bwrap at a tiny size, a hostile candidate, the evaluator.

The sandboxed runs come from conftest's `hades_eval` (one `scientist eval` per pytest run): the shipped distiller, a
shipped candidate (learned soft labels), the shipped distiller with attacks in its import (hostile) and a candidate
the tracer refuses. The harness's gate, the evaluator's checks of the artifact, the search space and the figures
run here without a sandbox.
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

from jax_workloads import hades
from jax_workloads.sealed import ArtifactError, export_arrays

# The sandboxed runs compile SpaceInvaders-MinAtar's step twice (harness, evaluator) per distinct candidate: 866 s
# for the fixture under a load of 15-17 on 2 cores (other engineers' suites), within 900 s; 1200 leaves room.
pytestmark = pytest.mark.timeout(1200)
HADES = ROOT / "templates" / "hades"
TINY = {  # the smallest sizes: a sandboxed run is nearly all compilation (SpaceInvaders' step, harness and evaluator)
    "seeds": "2",
    "time_s": "300",
    "eval_time_s": "200",
    "population": "4",
    "generations": "2",
    "eval_steps": "16",
    "width": "8",
    "episodes": "2",
    "inits": "1",
    "max_steps": "40",
    "architectures": '[{ width = 16, activation = "tanh" }]',
}
CANDIDATE = "soft_labels"
TINY_CONFIG = hades.DistillConfig(population=4, generations=2, rollouts=1, eval_envs=2, eval_steps=16,
                                  bc=hades.BCConfig(width=8))  # TINY's ES, for the checks run in process
BASELINE_SOURCE = (HADES / "distiller.py").read_text()
# Refused: a constant of the wrong type (the tracer), one out of its range (the tracer), a shaping whose weights
# are NaN (the harness's gate, on the exported function).
BAD = {"fixed_init_text": BASELINE_SOURCE + '\nFIXED_INIT = "yes"\n',
       "sigma_range": BASELINE_SOURCE + "\nSIGMA_INIT = -1.0\n",
       "nan_shape": BASELINE_SOURCE + "\n\ndef shape(fitness, generation):\n    return fitness * jnp.nan\n"}

ATTACKS = '''

# ---- Everything below runs when the module is imported: the attacks. The distiller above is the baseline's.
import atexit  # noqa: E402
import importlib.util as _util  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as _np  # noqa: E402

import jax_workloads.hades as _hades  # noqa: E402
import jax_workloads.sealed as _sealed  # noqa: E402

FORGED = b"forged by the candidate"
# Its own folder (the tracer's), then the harness's work folder beside it, were it reachable.
# (Not exports/: a file planted there is copied to the harness, which loads only the five named exports, as
# test_navix shows; here it would only cost the hostile run its share of the baseline's compiled programs.)
TARGETS = ["artifacts/dataset.npz", "../../work/artifacts/dataset.npz", "../work/artifacts/dataset.npz"]


def _log(attack, **what):
    with open("attacks.jsonl", "a") as f:
        f.write(json.dumps({"attack": attack, **what}) + "\\n")


# (a) The shared code: no size check on data sets, more generations, a forged data set on export.
_make_distill = _hades.make_distill
_hades.check_dataset = lambda *a, **k: None
_hades.make_distill = lambda config, *a, **k: _make_distill(config._replace(generations=10 * config.generations)
                                                            if hasattr(config, "_replace") else config, *a, **k)
_sealed.export_arrays = lambda path, arrays: _np.savez(path, states=_np.ones((2, 999, 600), _np.float32))
_log("rebind", make_distill=_hades.make_distill.__name__)


# (e) The old contract: an ES and a decoder of the candidate's own that plant a designed data set (every state
# 42), in the module and in the shared code. The harness owns the ES and the decoding: none is traced or called
# (a call would log it, and the exported states would be 42s).
def _designed(fn):
    def planted(*args):
        _log("called", fn=fn)
        return jnp.full((DATASET_SIZE, 600), 42.0)
    return planted


init, ask, decode, tell, result = (_designed(f) for f in ("init", "ask", "decode", "tell", "result"))
_hades.es_init, _hades.decode, _hades.es_tell = (_designed(f"hades.{f}") for f in ("es_init", "decode", "es_tell"))


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
_log("held_out", config_keys=sorted(json.loads(_text)), private_seen="eval_seed" in _text or "init_seed" in _text
     or "architectures" in _text, data=Path("data").exists())
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


def write_tiny_hades(dest: Path) -> Path:
    """Copy the hades template to dest/hades at TINY settings."""
    return copy_template(dest, "hades", TINY)


@pytest.fixture(scope="module")
def runs(request):
    """The shipped distiller, a shipped candidate, the hostile one and two refused ones, through `scientist eval
    --sandbox bwrap` (tiny)."""
    _, _, out, r = request.getfixturevalue("hades_eval")
    for name in ("baseline", CANDIDATE, "hostile"):
        assert f"{name}: failed" not in r.err, r.text
    return out, r


def final_info(out: Path, name: str) -> dict:
    return json.loads((out / name / "final_info.json").read_text())


def test_eval_through_bwrap_scores_the_baseline_and_a_candidate(runs):
    out, r = runs
    for name, size in (("baseline", 16), (CANDIDATE, 16)):
        info = final_info(out, name)
        values = info["metrics"]["normalized_return"]["values"]
        assert len(values) == 2 and all(v >= 0 for v in values), name
        extra = info["extra"]
        assert extra["dataset_size"] == size and extra["architectures"] == ["16 tanh"]
        assert np.asarray(extra["per_architecture_return"]).shape == (2, 1)
        assert np.asarray(extra["es_curves"]["fitness_mean"]).shape == (2, 2)  # 2 seeds, 2 generations
        np.testing.assert_allclose(np.asarray(info["metrics"]["return"]["values"]) / extra["ppo_reference_return"],
                                   values)
    labels = np.asarray(final_info(out, CANDIDATE)["extra"]["labels"])
    assert labels.shape == (16, 4) and not np.all(np.isin(labels, (0.0, 1.0)))  # learned soft labels
    assert "normalized_return" in r.out


def test_refused_candidates_are_failed_runs_with_one_line(runs):
    _, r = runs
    assert "fixed_init_text: failed" in r.err and "FIXED_INIT must be True or False" in r.err
    assert "sigma_range: failed" in r.err and "SIGMA_INIT must be a number in [0.001, 10], not -1.0" in r.err
    assert "nan_shape: failed" in r.err and "shape's weights hold NaN or infinite values" in r.err


@pytest.mark.parametrize("line,reason", [
    ("DATASET_SIZE = 80", "DATASET_SIZE must be an integer in [1, 64] ([config.es] max_dataset_size), not 80"),
    ("SIGMA_INIT = 0.0", "SIGMA_INIT must be a number in [0.001, 10], not 0.0"),
    ("SIGMA_INIT = True", "SIGMA_INIT must be a number in [0.001, 10], not True"),
    ("OPENES_LR = 5", "OPENES_LR must be a number in [0.0001, 1], not 5"),
    ('STRATEGY = "cma"', "STRATEGY must be one of ('snes', 'openes'), not 'cma'"),
    ("LEARN_LABELS = 1", "LEARN_LABELS must be True or False, not 1"),
    ("del TEMPERATURE, SIGMA_INIT", "SIGMA_INIT is not defined"),
])
def test_constants_out_of_range_are_refused_with_one_line(line, reason, tmp_path, capsys):
    """The tracer's check of the declared constants (in process: the same es_spec the harness applies again)."""
    path = tmp_path / "bad.py"
    path.write_text(BASELINE_SOURCE + "\n" + line + "\n")
    with pytest.raises(SystemExit) as exc:
        hades.import_distiller(path, TINY_CONFIG)
    assert exc.value.code == 3
    assert capsys.readouterr().err.strip().splitlines() == [f"HARNESS-FAIL: candidate bad.py: {reason}"]


def test_the_harness_checks_the_manifest_and_gates_the_shaping_again(tmp_path, capsys):
    """What the tracer checked, the harness checks again on the exports: a manifest edited after the tracer's
    check, and a shaping whose weights are NaN on the gate's made-up fitness, are refused with one line."""
    from jax_workloads import exported

    path = tmp_path / "distiller.py"
    path.write_text(BASELINE_SOURCE)
    out = tmp_path / "exports"
    hades.export_distiller(hades.import_distiller(path, TINY_CONFIG), TINY_CONFIG, out)
    distiller = hades.load_distiller(out, TINY_CONFIG)
    assert distiller.spec == hades.ESSpec()  # the baseline's constants
    hades.gate(distiller, TINY_CONFIG)  # passes
    manifest = json.loads((out / exported.MANIFEST).read_text())
    (out / exported.MANIFEST).write_text(json.dumps({**manifest, "dataset_size": 999}))
    with pytest.raises(SystemExit):
        hades.load_distiller(out, TINY_CONFIG)
    assert "the traced distiller was refused: DATASET_SIZE must be an integer in [1, 64]" in capsys.readouterr().err
    for weights, reason in ((lambda f, g: f * jnp.inf, "shape's weights hold NaN or infinite values"),
                            (lambda f, g: f[:2], "shape returned float32[2], not float weights [4]")):
        with pytest.raises(SystemExit):
            hades.gate(hades.Distiller(weights, hades.ESSpec()), TINY_CONFIG)
        assert reason in capsys.readouterr().err


def test_a_shaping_cannot_steer_the_data_set_only_weigh_the_harnesss_noise():
    """The harness's ES loop with a cheap fitness (closeness of the states to 1), in process: the baseline's
    shaping follows the fitness (rewarding the opposite gives another data set, farther from 1); a shaping that
    ignores the fitness and puts a weight of 1e30 on one member gives the same data set whatever the fitness,
    its steps bounded (sum |w| <= 1: a few sigmas from 0, not 1e29); NaN weights count 0: the mean stays at 0."""
    spec = hades.ESSpec(dataset_size=1)
    config = hades.DistillConfig(population=16, generations=10, rollouts=1)

    def run(shape, sign):
        def fitness(key, init_key, states, labels):
            return -sign * jnp.mean((states - 1.0) ** 2), jnp.float32(0)
        out = jax.jit(hades.make_distill(config, hades.Distiller(shape, spec), fitness_fn=fitness))(jax.random.key(0))
        return np.asarray(out["states"])

    baseline = load_module(HADES / "distiller.py", "hades_distiller_steer").shape
    followed, opposed = run(baseline, 1), run(baseline, -1)
    assert np.mean((followed - 1) ** 2) < np.mean((opposed - 1) ** 2)
    huge = lambda f, g: jnp.zeros_like(f).at[0].set(1e30)  # noqa: E731 - ignores the fitness
    planted = run(huge, 1)
    np.testing.assert_array_equal(planted, run(huge, -1))
    assert 0 < np.abs(planted).max() < 10 * spec.sigma_init * 6
    assert not np.any(run(lambda f, g: f * jnp.nan, 1))


def test_the_harnesss_generation_programs_compute_the_one_program_es():
    """run_distill (the harness: each generation's steps as programs of their own, the fitness one free of the
    candidate's functions) gives every seed what make_distill (one program) gives it."""
    spec = hades.ESSpec(dataset_size=2)
    config = hades.DistillConfig(population=8, generations=4, rollouts=2)
    shape = load_module(HADES / "distiller.py", "hades_distiller_programs").shape

    def fitness(key, init_key, states, labels):
        noise = jax.random.normal(jax.random.fold_in(key, 3)) + jax.random.normal(init_key)
        return -jnp.mean((states - 0.5) ** 2) + 0.01 * noise, jnp.mean(labels * states[:, :4])

    rngs = jax.random.split(jax.random.key(7), 3)
    one = jax.jit(jax.vmap(hades.make_distill(config, hades.Distiller(shape, spec), fitness_fn=fitness)))(rngs)
    seen = []
    loop = hades.run_distill(config, hades.Distiller(shape, spec), rngs, progress=seen.append, fitness_fn=fitness)
    assert seen == list(range(config.generations)) and set(loop) == set(one)
    for k in one:
        np.testing.assert_allclose(loop[k], one[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert np.abs(np.asarray(loop["states"])).max() > 0  # the ES moved


def test_hostile_import_scores_exactly_as_the_baseline(runs):
    out, _ = runs
    base, hostile = final_info(out, "baseline"), final_info(out, "hostile")
    for metric in ("normalized_return", "return"):
        assert hostile["metrics"][metric]["values"] == base["metrics"][metric]["values"], metric
    assert hostile["extra"]["es_curves"] == base["extra"]["es_curves"]  # evolved alike, generation by generation
    assert hostile["extra"]["states"] == base["extra"]["states"]


def test_the_attacks_ran_in_the_tracer_only_and_reached_nothing(runs):
    out, _ = runs
    trace, work = out / "hostile" / "trace", out / "hostile" / "work"
    attacks = {a["attack"]: a for a in map(json.loads, (trace / "attacks.jsonl").read_text().splitlines())}
    # No "called": the old contract's functions (e) were neither traced nor run, in the tracer or after it.
    assert set(attacks) == {"rebind", "thread", "atexit", "held_out", "harness"}, attacks
    for kind in ("thread", "atexit"):  # only the tracer's own folder was writable
        assert set(attacks[kind]["refused"]) >= {"../../work/artifacts/dataset.npz"}, attacks[kind]
    assert attacks["held_out"] == {"attack": "held_out", "config_keys": ["config", "seeds"], "private_seen": False,
                                   "data": False}
    assert attacks["harness"]["found"] == "harness.py"
    assert not (work / "attacks.jsonl").exists()
    dataset = work / "artifacts" / hades.DATASET_FILE
    if dataset.is_file():  # the run folder may drop work/ once scored
        assert dataset.read_bytes() != b"forged by the candidate"


# ---------------------------------------------------------------- the evaluator's side, without a sandbox


def write_dataset(path: Path, states, labels) -> Path:
    export_arrays(path, {"states": np.asarray(states, np.float32), "labels": np.asarray(labels, np.float32)})
    return path


def test_loader_refuses_oversized_unbounded_and_mislabelled_data_sets(tmp_path):
    one_hot = np.eye(4)[np.arange(16) % 4]
    ok = write_dataset(tmp_path / "ok.npz", np.zeros((2, 16, 600)), np.stack([one_hot] * 2))
    assert hades.load_dataset(ok, 2, 600, 4, 64)["states"].shape == (2, 16, 600)
    cases = {
        "at most 64": (np.zeros((2, 65, 600)), np.zeros((2, 65, 4)) + 0.25),
        "magnitude": (np.full((2, 16, 600), 2e4), np.stack([one_hot] * 2)),
        "distributions": (np.zeros((2, 16, 600)), np.stack([one_hot * 2] * 2)),
        "NaN": (np.full((2, 16, 600), np.nan), np.stack([one_hot] * 2)),
        "shape": (np.zeros((2, 16, 601)), np.stack([one_hot] * 2)),
    }
    for match, (states, labels) in cases.items():
        path = write_dataset(tmp_path / f"{match}.npz", states, labels)
        with pytest.raises(ArtifactError, match=match):
            hades.load_dataset(path, 2, 600, 4, 64)
    with pytest.raises(ArtifactError, match="seeds|shape"):
        hades.load_dataset(ok, 3, 600, 4, 64)


def test_ppo_reference_must_be_for_this_environment():
    evaluate = load_module(HADES / "evaluate.py", "hades_evaluate")
    assert evaluate.ppo_reference({"env": "SpaceInvaders-MinAtar"}, {"ppo_reference": {
        "env": "SpaceInvaders-MinAtar", "return": 2.0}}) == 2.0
    with pytest.raises(ValueError, match="measured on SpaceInvaders-MinAtar, not Breakout-MinAtar"):
        evaluate.ppo_reference({"env": "Breakout-MinAtar"}, {"ppo_reference": {"env": "SpaceInvaders-MinAtar",
                                                                                "return": 2.0}})


def test_shipped_files_are_rendered_known_members():
    space = load_module(HADES / "search_space.py", "hades_search_space")
    assert space.render(space.known()["baseline"])["distiller.py"] == BASELINE_SOURCE
    paths = sorted((HADES / "candidates").glob("*.py"))
    assert {p.stem for p in paths} == set(space.known()) - {"baseline"}
    for path in paths:
        assert space.render(space.known()[path.stem])["distiller.py"] == path.read_text(), path.name
    # The knob a strategy does not read is one candidate whatever its value.
    snes = space.genome(openes_lr=0.2)
    assert space.canonical(snes) == space.genome() != snes


def test_figures_from_synthetic_results(tmp_path):
    from papers.figures import template_figures

    rng = np.random.default_rng(0)

    def synthetic(seeds):
        labels = np.eye(4)[np.arange(16) % 4]
        return {"extra": {"es_curves": {"fitness_mean": rng.uniform(0, 5, (seeds, 6)).tolist(),
                                        "fitness_max": rng.uniform(5, 9, (seeds, 6)).tolist()},
                          "architectures": ["256 relu", "128 tanh"], "ppo_reference_return": 50.0,
                          "per_architecture_return": rng.uniform(0, 20, (seeds, 2)).tolist(),
                          "states": rng.uniform(0, 1, (16, 600)).tolist(), "labels": labels.tolist()}}

    figs = template_figures(HADES, synthetic(3), synthetic(4), tmp_path)
    assert [f.label for f in figs] == ["fig:es_fitness", "fig:return_per_architecture", "fig:distilled_states"]
    for fig in figs:
        assert fig.path.read_bytes().startswith(b"%PDF") and fig.caption
    assert "3 seeds (best candidate) and 4 seeds" in figs[0].caption

"""The synthenv template end to end: `scientist eval` through bwrap at a tiny size, a hostile candidate, the evaluator.

The sandboxed runs come from conftest's `synthenv_eval` (one `scientist eval` per pytest run): the shipped bandit, a
shipped candidate (candidates/ppo_only.py), the shipped bandit with attacks in its import (hostile), and a candidate
the tracer must refuse (it meta-trains with the evaluator's held-out algorithm). The evaluator's own checks of the
artifacts run here without a sandbox.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_template

from jax_workloads import synthenv as se
from jax_workloads.sealed import ArtifactError, export_arrays

# The fixture's one `scientist eval` compiles three meta-training programs (the baseline's, the candidate's, and the
# hostile one's: its exports folder holds the file its attack planted, so it does not share the baseline's cache)
# and the evaluator's two: 1478 s under a load of 11-17 on 2 cores, far beyond the suite's 600 s per test.
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
BAD = {"held_out": SHIPPED.replace('ALGORITHMS = ("ppo", "dqn")', 'ALGORITHMS = ("ppo", "reinforce")')}

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
_se.make_meta_train = lambda family, algorithms, inner, meta, fns: _make_meta_train(
    family, algorithms, inner, dataclasses.replace(meta, generations=10 * meta.generations), fns)
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
'''


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def write_tiny_synthenv(dest: Path) -> Path:
    """Copy the synthenv template to dest/synthenv at TINY settings."""
    return copy_template(dest, "synthenv", TINY)


@pytest.fixture(scope="module")
def runs(request):
    """The shipped bandit, a shipped candidate, the hostile one and the refused one, through bwrap (tiny)."""
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


def test_refused_candidate_is_a_failed_run_with_one_line(runs):
    _, r = runs
    assert "held_out: failed" in r.err and "REINFORCE is the evaluator's held-out algorithm" in r.err


def test_hostile_import_scores_exactly_as_the_baseline(runs):
    out, _ = runs
    base, hostile = final_info(out, "baseline"), final_info(out, "hostile")
    for metric in ("return", "return_ppo", "return_reinforce"):
        assert hostile["metrics"][metric]["values"] == base["metrics"][metric]["values"], metric
    # Meta-trained alike, generation by generation: the rebinding of the shared code reached nothing.
    assert hostile["extra"]["meta_curves"] == base["extra"]["meta_curves"]


def test_the_attacks_ran_in_the_tracer_only_and_reached_nothing(runs):
    out, _ = runs
    trace, work = out / "hostile" / "trace", out / "hostile" / "work"
    attacks = {a["attack"]: a for a in map(json.loads, (trace / "attacks.jsonl").read_text().splitlines())}
    assert set(attacks) == {"rebind", "thread", "atexit", "held_out", "harness"}, attacks
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

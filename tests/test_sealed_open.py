"""Sealed training on OPEN (#23 items 1 and 9): a rule whose import attacks the pipeline scores exactly as the baseline.

The hostile candidate's `update` is the shipped Adam's, verbatim; its import (a) rebinds the shared training code
(twice the epochs per update, zeroed exported parameters), (b) registers an exit handler and starts a non-daemon
thread that rewrite artifacts/ and exports/ files after the tracer's work is done, and (c) looks for data/ files and
[private] values and computes the evaluator's episode keys from the shipped eval_seed. It is imported only in the
tracer's sandbox, so none of it reaches training: both runs, through the real CLI and bwrap, score the same per seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

ADAM = (ROOT / "templates" / "open" / "candidates" / "adam.py").read_text()
FORGED = b"forged by the candidate"
TARGETS_OUTSIDE = ["../../work/artifacts/policy.npz", "../../work/exports/update_6x4.jaxexport"]

ATTACKS = '''

# ---- Everything below runs when the module is imported: the attacks. `update` above is the baseline's.
import atexit  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402

import jax_workloads.ppo as _ppo  # noqa: E402
import jax_workloads.sealed as _sealed  # noqa: E402
from jax_workloads.seeds import typed_seed_key  # noqa: E402

FORGED = b"forged by the candidate"
# Its own folder (the sandbox's /sandbox/work), then the harness's work folder beside it, were it reachable.
TARGETS = ["artifacts/policy.npz", "artifacts/curve.npz", "exports/policy.npz", "../../work/artifacts/policy.npz",
           "../../work/exports/update_6x4.jaxexport"]


def _log(attack, **what):
    with open("attacks.jsonl", "a") as f:
        f.write(json.dumps({"attack": attack, **what}) + "\\n")


# (a) The shared training code: twice the epochs per update (same curve shape), and zeroed exported parameters.
_make_train, _export_arrays = _ppo.make_train, _sealed.export_arrays
_ppo.make_train = lambda config, *a, **k: _make_train(
    dataclasses.replace(config, update_epochs=2 * config.update_epochs), *a, **k)
_sealed.export_arrays = lambda path, arrays: _export_arrays(path, {k: 0 * v for k, v in arrays.items()})
_log("rebind", make_train=_ppo.make_train.__name__)


# (b) Rewrite artifacts and exports once the tracer is done: a non-daemon thread, then an exit handler.
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
    time.sleep(2.0)  # the tracer has written its exports by then
    _forge("thread")


threading.Thread(target=_later, daemon=False).start()
atexit.register(_forge, "atexit")


# (c) The held-out data: data/ files, [private] in config.json, the evaluator's keys from the shipped eval_seed.
def _look():
    data = sorted(str(p) for p in Path("data").rglob("*")) if Path("data").is_dir() else None
    text = Path("config.json").read_text()
    keys = jax.random.key_data(jax.random.split(typed_seed_key(20241125), 2))  # the evaluator's, per seed
    _log("held_out", data=data, config_keys=sorted(json.loads(text)), eval_seed_seen="20241125" in text,
         eval_keys=list(keys.shape))


try:
    _look()
except Exception as e:  # noqa: BLE001
    _log("held_out", error=repr(e))
'''


# The runs come from conftest's `open_eval`: one eval of Adam, test_open's bad rules and the hostile rule.
@pytest.fixture(scope="module")
def runs(request):
    """The baseline (Adam) and the hostile candidate, through `scientist eval --sandbox bwrap` on the tiny config."""
    _, _, out, r = request.getfixturevalue("open_eval")
    assert "hostile: failed" not in r.err and "adam: failed" not in r.err, r.text
    return out


def test_hostile_import_scores_exactly_as_the_baseline(runs):
    base, hostile = (json.loads((runs / name / "final_info.json").read_text()) for name in ("adam", "hostile"))
    for metric in ("return", "normalized_return"):
        assert hostile["metrics"][metric]["values"] == base["metrics"][metric]["values"], metric
    assert base["metrics"]["return"]["mean"] > 30  # a trained policy (random: about 20), so equality means something
    assert hostile["extra"]["train_return"] == base["extra"]["train_return"]  # trained alike, update by update


def test_the_attacks_ran_in_the_tracer_only(runs):
    trace, work = runs / "hostile" / "trace", runs / "hostile" / "work"
    attacks = [json.loads(line) for line in (trace / "attacks.jsonl").read_text().splitlines()]
    by_kind = {a["attack"]: a for a in attacks}
    assert set(by_kind) == {"rebind", "thread", "atexit", "held_out"}, attacks
    # (b) Only the tracer's own folder was writable; what it forged there never reached training or the evaluator.
    for kind in ("thread", "atexit"):
        assert by_kind[kind]["wrote"] == ["artifacts/policy.npz", "artifacts/curve.npz", "exports/policy.npz"]
        assert by_kind[kind]["refused"] == TARGETS_OUTSIDE
    assert (trace / "artifacts" / "policy.npz").read_bytes() == FORGED
    policy = work / "artifacts" / "policy.npz"
    if policy.is_file():  # the run folder may drop work/ once scored
        assert policy.read_bytes() != FORGED
        with np.load(policy) as ours, np.load(runs / "adam" / "work" / "artifacts" / "policy.npz") as theirs:
            assert all(np.array_equal(ours[k], theirs[k]) and np.abs(ours[k]).sum() > 0 for k in theirs)
    # (c) No data and no [private] value in the tracer's sandbox; the shipped eval_seed is only a public fixture.
    seen = by_kind["held_out"]
    assert seen["data"] is None and seen["eval_seed_seen"] is False and seen["eval_keys"] == [2, 2], seen
    assert by_kind["held_out"]["config_keys"] == ["config", "seeds"]


def test_no_traceback_and_the_exports_are_the_ones_traced(runs):
    exports = sorted(p.name for p in (runs / "hostile" / "trace" / "exports").iterdir())
    assert "manifest.json" in exports and "update_6x4.jaxexport" in exports
    assert json.loads((runs / "hostile" / "trace" / "exports" / "manifest.json").read_text()) == {
        "CARRY": 0, "ZERO_MEAN": False}
    assert not Path(runs / "hostile" / "trace.log").read_text().count("Traceback")

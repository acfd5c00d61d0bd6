"""Sealed training of the diffusion and transformer recipes (#23 items 1 and 9), through the real CLI and bwrap.

A hostile candidate whose functions are exactly the baseline's, but whose import attacks the run:
(a) it rebinds the shared training code in jax_workloads to train twice as long (the measured exploit:
a longer training scored better with the baseline's functions), and tries to edit that code's file;
(b) it registers an exit handler, starts a non-daemon thread and forks a process, which rewrite
artifacts, exports and the run's result later; (c) it reads the training data and rebuilds the
held-out data from the shipped [private] seeds. The candidate's Python runs only in the tracer's
sandbox, so the run must score exactly the baseline's per-seed values. Each home draws its own
secrets, so the shipped seeds are no key to its held-out data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, copy_template, scientist

from jax_workloads import diffusion as df
from jax_workloads import transformer as tf

# The tiny settings of tests/test_diffusion.py and tests/test_transformer.py, with fewer steps (and a time limit
# for busy machines): the results need only be equal, not good.
TINY = {
    "diffusion": {"seeds": "2", "time_s": "900", "memory_mb": "2000", "steps": "200", "batch_size": "256",
                  "learning_rate": "1e-2", "samples": "512"},
    "transformer": {"seeds": "2", "time_s": "900", "memory_mb": "2500", "steps": "40", "batch_size": "8",
                    "checkpoints": "2", "eval_batch": "8", "block_size": "16", "d_model": "32", "n_layers": "1",
                    "n_heads": "2", "eval_windows": "32"},
}
EDITABLE = {"diffusion": "ddpm.py", "transformer": "recipe.py"}
METRIC = {"diffusion": "mmd", "transformer": "val_bpc"}
# What (a) rebinds: the functions the harnesses build training from, now and before sealed training.
SHARED = {"diffusion": ("make_train", "make_sweep"), "transformer": ("make_train", "make_train_from")}
# (c): the held-out data, rebuilt in the candidate's process from the shipped [private] values.
REBUILD = {
    "diffusion": "_shared.make_points(31, 2, 2048)",  # the shipped heldout_seed
    "transformer": "_shared.join_documents(_shared.fortune_documents())",  # the corpus, held-out part included
}

HOSTILE = '''

# --- hostile: every function above is the baseline's; importing this module attacks the run ---
import atexit as _atexit
import dataclasses as _dc
import os as _os
import threading as _threading
import time as _time
from pathlib import Path as _Path

import jax_workloads.{module} as _shared


def _say(what, ok):
    print("HOSTILE", "did" if ok else "failed to", what, flush=True)


def _try(what, fn):
    try:
        fn()
        _say(what, True)
    except Exception:
        _say(what, False)


# (a) train twice as long, whichever training function the harness calls; and for good, in its file
def _longer(original):
    def wrapped(config, *args, **kwargs):
        return original(_dc.replace(config, steps=2 * config.steps), *args, **kwargs)
    return wrapped


for _name in {shared}:
    setattr(_shared, _name, _longer(getattr(_shared, _name)))
_try("append to " + _shared.__file__, lambda: open(_shared.__file__, "a").write("\\n"))

# (b) later: after the tracer's main function, at exit, and from a forked process after the tracer ended
_TARGETS = ("artifacts/denoiser.npz", "artifacts/params.npz", "artifacts/forward.jaxexport",
            "../final_info.json", "/sandbox/final_info.json", "exports/hostile.txt")


def _rewrite(when):
    for target in _TARGETS:
        _try(f"write {{target}} ({{when}})", lambda: (_Path(target).parent.mkdir(exist_ok=True),
                                                      _Path(target).write_text("hostile")))


def _later():
    _threading.main_thread().join()
    _rewrite("thread")


_threading.Thread(target=_later).start()
_atexit.register(_rewrite, "atexit")
_parent = _os.getpid()
if _os.fork() == 0:  # waits for the tracer to end, then writes (unless it ended with the tracer's sandbox)
    _os.setsid()
    while _os.getppid() == _parent:
        _time.sleep(0.1)
    _time.sleep(1)
    _Path("late.txt").write_text("outlived the tracer")
    _os._exit(0)

# (c) the data
for _path in ("data/train.npz", "../work/data/train.npz", "/sandbox/work/data/train.npz"):
    _try("read " + _path, lambda: open(_path, "rb").read(1))
_try("rebuild the held-out data", lambda: {rebuild})
'''


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """One home for the module, whose secrets are drawn (not the shipped values), as a user's are."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCIENTIST_SECRETS", "drawn")
        r = scientist("templates", "--home", str(home))
    assert r.code == 0, r.text
    return home


def run_eval(template: str, templates: Path, home: Path, out: Path, candidate: Path | None = None):
    args = ["--candidate", str(candidate)] if candidate else []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCIENTIST_SECRETS", "drawn")
        return scientist("eval", "--template", template, "--templates-dir", str(templates), "--home", str(home),
                         "--sandbox", "bwrap", "--out", str(out), *args)


def per_seed(out: Path, metric: str) -> list[float]:
    return json.loads((out / "final_info.json").read_text())["metrics"][metric]["values"]


@pytest.fixture(scope="module", params=["diffusion", "transformer"])
def runs(request, home, tmp_path_factory) -> dict:
    """The baseline and the hostile candidate of one template, evaluated in the same home."""
    template = request.param
    if template == "transformer" and not tf.FORTUNES.is_dir():
        (pytest.fail if os.environ.get("CI") else pytest.skip)("the fortune corpus is not installed")
    tmp = tmp_path_factory.mktemp(template)
    copy_template(tmp / "templates", template, TINY[template])
    source = (ROOT / "templates" / template / EDITABLE[template]).read_text()
    hostile = tmp / EDITABLE[template]
    hostile.write_text(source + HOSTILE.format(module=template, shared=SHARED[template], rebuild=REBUILD[template]))
    base = run_eval(template, tmp / "templates", home, tmp / "base")
    assert base.code == 0, base.text
    attack = run_eval(template, tmp / "templates", home, tmp / "hostile", hostile)
    assert attack.code == 0, attack.text
    return {"template": template, "templates": tmp / "templates", "tmp": tmp, "base": tmp / "base",
            "hostile": tmp / "hostile"}


def test_an_attacking_import_changes_nothing_and_metric_exploits_are_refused(runs, home, tmp_path):
    """One test per template, so that under xdist its two evaluations (the `runs` fixture) are made by one worker."""
    _the_attacking_import_changes_nothing(runs)
    if runs["template"] == "diffusion":
        _the_shipped_seeds_rebuild_nothing_of_a_home_with_drawn_secrets(runs)
    else:
        _the_transformer_tracer_cannot_read_the_corpus(runs)
    _metric_exploits_of_the_recipe_are_refused(runs, home, tmp_path)


def _the_attacking_import_changes_nothing(runs):
    template, hostile = runs["template"], runs["hostile"]
    metric = METRIC[template]
    assert per_seed(hostile, metric) == per_seed(runs["base"], metric)  # exactly: the same exports, trained alike
    trace, train = (hostile / "trace.log").read_text(), (hostile / "train.log").read_text()
    assert "HOSTILE" not in train  # the candidate never ran where training did
    # It ran in the tracer: the rebinding was done there, where nothing trains; the shared code's file stayed
    # read-only, the data was not there, and nothing outside the tracer's own folder could be written.
    assert "HOSTILE failed to append to" in trace and "HOSTILE did append" not in trace
    assert "HOSTILE did read" not in trace and trace.count("HOSTILE failed to read") == 3
    for when in ("thread", "atexit"):
        assert f"HOSTILE failed to write /sandbox/final_info.json ({when})" in trace
        assert f"HOSTILE did write ../final_info.json ({when})" not in trace
    # What it wrote in its own folder stayed there: the run's artifacts are the harness's, and a file left
    # among the exports is ignored; the process it forked ended with the tracer's sandbox.
    assert (hostile / "work" / "artifacts" / "denoiser.npz" if template == "diffusion"
            else hostile / "work" / "artifacts" / "params.npz").read_bytes()[:2] == b"PK"
    assert not (hostile / "trace" / "late.txt").exists()
    info = json.loads((hostile / "final_info.json").read_text())
    assert info["metrics"][metric]["values"] == per_seed(runs["base"], metric)


def _the_shipped_seeds_rebuild_nothing_of_a_home_with_drawn_secrets(runs):
    """(c) the rebuild itself may succeed (public code, public shipped values), but this home's data differ.
    Diffusion only: the transformer's held-out text is hidden from the tracer (confine.py), so its rebuild fails."""
    with np.load(runs["hostile"] / "work" / "data" / "train.npz") as d:
        points = d["points"]
    shipped = np.asarray(df.make_points(20241125, 2, points.shape[2]))  # the shipped data_seed
    assert points.shape == shipped.shape and not np.allclose(points, shipped)


def _the_transformer_tracer_cannot_read_the_corpus(runs):
    trace = (runs["hostile"] / "trace.log").read_text()
    assert "HOSTILE failed to rebuild the held-out data" in trace


def _metric_exploits_of_the_recipe_are_refused(runs, home, tmp_path):
    """transformer: a Block that reads the next character is refused by the harness's causality gate.
    diffusion: a sampler table that ignores the network (b = 0) samples Gaussian noise: no better than noise."""
    template = runs["template"]
    source = (ROOT / "templates" / template / EDITABLE[template]).read_text()
    cheat = tmp_path / EDITABLE[template]
    if template == "transformer":
        cheat.write_text(source.replace("return x + MLP(self.d_model)(nn.LayerNorm()(x))",
                                        "return x + MLP(self.d_model)(nn.LayerNorm()(jnp.roll(x, -1, axis=1)))"))
        r = run_eval(template, runs["templates"], home, tmp_path / "out", cheat)
        assert r.code == 1 and "Block rejected: the model is not causal" in r.err and "Traceback" not in r.text
        return
    cheat.write_text(source + "\n\n_sampler = sampler\n\n\ndef sampler(alpha_bar):\n"
                     "    tau, a, b, c = _sampler(alpha_bar)\n    return tau, a, 0 * b, c\n")
    r = run_eval(template, runs["templates"], home, tmp_path / "out", cheat)
    assert r.code == 0, r.text
    info = json.loads((tmp_path / "out" / "final_info.json").read_text())
    noise = np.mean(info["extra"]["per_dataset"]["mmd_noise"])
    assert info["metrics"]["mmd"]["mean"] > 0.9 * noise and noise > np.mean(per_seed(runs["base"], "mmd"))

"""The diffusion template: data, metric and memorisation check, a workload that learns, the harness's gate,
the sealed evaluator's checks, the search space, figures, and `scientist eval` through the real bwrap sandbox."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import re
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, copy_template, scientist

from jax_workloads import diffusion as df
from jax_workloads import sealed

DIFFUSION = ROOT / "templates" / "diffusion"

# Small enough that a sandboxed run takes seconds on 2 cores; the network and the T = 100 levels are the template's.
TINY = {
    "seeds": "2",
    "time_s": "120",
    "memory_mb": "2000",
    "steps": "800",
    "batch_size": "256",
    "learning_rate": "1e-2",
    "samples": "512",
}


def write_tiny_diffusion(dest: Path, **overrides: str) -> Path:
    """Copy the diffusion template to dest/diffusion with TINY settings (and overrides) in its toml, compiled with
    XLA's optimisations: its 800 steps run longer than they compile (39.9 s against 28.1 s for the eval test)."""
    return copy_template(dest, "diffusion", {**TINY, **overrides}, optimize=True)


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluator = load_module(DIFFUSION / "evaluate.py", "diffusion_evaluator")
harness = load_module(DIFFUSION / "harness.py", "diffusion_harness")
ss = load_module(DIFFUSION / "search_space.py", "diffusion_search_space")
baseline_recipe = load_module(DIFFUSION / "ddpm.py", "diffusion_ddpm")


def tiny_config() -> tuple[dict, dict]:
    """The [config] and [private] tables of the TINY template, as the evaluator receives them."""
    spec = tomllib.loads((DIFFUSION / "template.toml").read_text())
    config, private = spec["config"], spec["private"]
    config["train"].update(steps=int(TINY["steps"]), batch_size=int(TINY["batch_size"]),
                           learning_rate=float(TINY["learning_rate"]))
    config["eval"]["samples"] = int(TINY["samples"])
    return config, private


def table_of(recipe, timesteps: int) -> dict[str, jax.Array]:
    """The sampler table {tau, a, b, c} of a recipe module, as the harness exports it."""
    return dict(zip(("tau", "a", "b", "c"), map(jnp.asarray, recipe.sampler(recipe.schedule(timesteps))),
                    strict=True))


# ---------------------------------------------------------------- data and the metric


def test_data_sets_are_deterministic_bounded_and_per_seed():
    a = df.make_points(3, 2, 300)
    assert a.shape == (2, len(df.DATASETS), 300, 2) and a.dtype == jnp.float32
    assert np.array_equal(a, df.make_points(3, 2, 300))
    assert np.array_equal(a[1], df.make_points(3, 4, 300)[1])  # seed 1's points do not depend on the seed count
    assert not np.allclose(a[0], a[1])
    assert float(jnp.abs(a).max()) < 2.6
    # The shapes differ: the circles have an empty centre and an empty gap between the rings, the others not.
    radius = jnp.linalg.norm(a[0], axis=-1)
    circles = radius[df.DATASETS.index("circles")]
    assert float(jnp.mean((circles > 1.0) & (circles < 1.4))) < 0.02 and float(jnp.mean(circles < 0.5)) < 0.02


def test_mmd_is_zero_for_the_same_distribution_and_positive_for_noise():
    x, y = df.make_points(1, 1, 1000)[0], df.make_points(2, 1, 1000)[0]
    noise = jax.random.normal(jax.random.PRNGKey(0), (1000, 2))
    for d in range(len(df.DATASETS)):
        same = float(df.mmd2(x[d], y[d], 0.1))
        assert abs(same) < 5e-4, df.DATASETS[d]
        assert float(df.mmd2(noise, y[d], 0.1)) > 10 * max(abs(same), 1e-4), df.DATASETS[d]


def test_memorisation_check_catches_copies_of_training_points():
    """Samples that copy training points score like noise, although their plain MMD is excellent."""
    train, heldout = df.make_points(1, 1, 1000)[0], df.make_points(2, 1, 1000)[0]
    fresh = df.make_points(3, 1, 1000)[0]
    noise = jax.random.normal(jax.random.PRNGKey(0), (1000, 2))
    jitter = 1e-3 * jax.random.normal(jax.random.PRNGKey(1), train.shape)
    for d, name in enumerate(df.DATASETS):
        honest = df.score(fresh[d], train[d], heldout[d], noise, 0.1, 0.2)
        copier = df.score(train[d] + jitter[d], train[d], heldout[d], noise, 0.1, 0.2)
        assert abs(float(honest["memorisation"])) < 0.1 and float(honest["copied"]) == 0.0, name
        assert float(honest["mmd"]) == float(honest["mmd_raw"]), name
        assert float(copier["memorisation"]) > 0.95 and float(copier["copied"]) > 0.9, name
        # The copies fool the plain MMD (as good as fresh data) but not the metric (near noise).
        assert float(copier["mmd_raw"]) < float(honest["mmd_raw"]) + 0.02, name
        assert float(copier["mmd"]) > 0.9 * float(copier["mmd_noise"]), name
        assert float(copier["mmd"]) > 3 * float(honest["mmd"]), name


# ---------------------------------------------------------------- the workload


def test_a_model_trained_on_few_points_memorises_and_is_penalised():
    """A DDPM fitted to 8 points reproduces them, and the check says so: most samples are judged copies."""
    config, _ = tiny_config()
    tc = harness.train_config(config)
    tc = dataclasses.replace(tc, steps=1500, batch_size=64, learning_rate=1e-2)
    circles = df.DATASETS.index("circles")
    train = df.make_points(11, 1, 8)[0, circles]
    params, _ = jax.jit(df.make_train(tc, baseline_recipe.schedule, baseline_recipe.loss))(jax.random.PRNGKey(0),
                                                                                          train)
    samples = df.sample(params, table_of(baseline_recipe, tc.timesteps), jax.random.PRNGKey(1), 512, tc.net)
    heldout = df.make_points(12, 1, 8)[0, circles]
    noise = jax.random.normal(jax.random.PRNGKey(2), (512, 2))
    s = df.score(samples, train, heldout, noise, 0.1, 0.2)
    assert float(s["memorisation"]) > 0.6 and float(s["copied"]) > 0.5


# ---------------------------------------------------------------- the harness's gate (in process)


def gate_failure(capsys, fn, *args) -> str:
    """Run a gate that must reject its candidate; return the one-line reason it printed."""
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code == sealed.CANDIDATE_FAILED
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(sealed.FAIL_MARKER)]
    assert len(lines) == 1
    return lines[0]


def test_gate_accepts_the_baseline_and_rejects_bad_recipes(capsys):
    ab = harness.gate_schedule(baseline_recipe.schedule, 20)
    harness.gate_loss(baseline_recipe.loss, ab)
    table = harness.gate_sampler(baseline_recipe.sampler, ab, 40)
    assert table["tau"].shape == (20,) and table["c"][-1] == 0.0
    bad = [
        (harness.gate_schedule, (lambda t: jnp.linspace(1.0, 0.0, t), 20), "strictly between 0 and 1"),
        (harness.gate_schedule, (lambda t: jnp.ones(t + 1) * 0.5, 20), "must return shape (20,)"),
        (harness.gate_schedule, (lambda t: 1 / 0, 20), "schedule(20) raised: ZeroDivisionError"),
        (harness.gate_loss, (lambda o, x0, e, ab: jnp.sum(o), np.full(20, 0.5)), "one value per example"),
        (harness.gate_loss, (lambda o, x0, e, ab: jnp.sqrt(-ab), np.full(20, 0.5)), "NaN or infinite values"),
        (harness.gate_sampler, (lambda ab: (ab, ab, ab), np.full(20, 0.5), 40), "four arrays (tau, a, b, c)"),
        (harness.gate_sampler, (lambda ab: (ab, ab, ab, ab[:3]), np.full(20, 0.5), 40), "one length K in 1..40"),
        (harness.gate_sampler, (lambda ab: (jnp.ones(50),) * 4, np.full(20, 0.5), 40), "one length K in 1..40"),
        (harness.gate_sampler, (lambda ab: (ab + 1, ab, ab, ab), np.full(20, 0.5), 40), "tau"),
        (harness.gate_sampler, (lambda ab: (ab, ab / 0 * 0, ab, ab), np.full(20, 0.5), 40), "NaN or infinite"),
    ]
    for fn, args, reason in bad:
        line = gate_failure(capsys, fn, *args)
        assert reason in line, line


# ---------------------------------------------------------------- the sealed evaluator's checks


def export_good(work: Path, config: dict, seeds: int) -> None:
    """Artifacts of the right names, shapes and dtypes: untrained denoisers and the baseline's table."""
    net = evaluator.net_config(config)
    keys = jax.random.split(jax.random.PRNGKey(0), seeds * len(df.DATASETS))
    params = jax.vmap(lambda k: df.init_denoiser(k, net))(keys)
    params = {k: np.asarray(v).reshape(seeds, len(df.DATASETS), *v.shape[1:]) for k, v in params.items()}
    sealed.export_arrays(work / "artifacts" / "denoiser.npz", params)
    table = table_of(baseline_recipe, config["train"]["timesteps"])
    sealed.export_arrays(work / "artifacts" / "sampler.npz", {k: np.asarray(v, np.float32) for k, v in table.items()})


def tamper(path: Path, **changes) -> None:
    with np.load(path) as d:
        arrays = {k: d[k] for k in d.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v(arrays[k]) if callable(v) else v
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> dict:
    """The evaluator's result for untrained denoisers with the baseline's sampler (2 seeds, tiny setting)."""
    config, private = tiny_config()
    work = tmp_path_factory.mktemp("untrained")
    export_good(work, config, 2)
    return evaluator.evaluate(work, config, private, 2)


def test_evaluator_scores_good_artifacts_and_rejects_bad_ones(tmp_path, untrained):
    config, private = tiny_config()
    seeds = 2
    work = tmp_path / "work"
    result = untrained
    assert set(result["per_seed"]) >= {"mmd", "mmd_raw", "memorisation", "mmd_spiral"}
    assert all(len(v) == seeds and all(np.isfinite(v)) for v in result["per_seed"].values())
    assert np.array(result["extra"]["figure_samples"]).shape == (len(df.DATASETS), 400, 2)

    den, smp = work / "artifacts" / "denoiser.npz", work / "artifacts" / "sampler.npz"
    cases = [
        (den, {"w_in": None}, "holds arrays"),
        (den, {"w_out": lambda a: a[:, :, :-1]}, "has shape"),
        (den, {"b_out": lambda a: a.astype(np.float64)}, "has dtype float64, expected float32"),
        (den, {"b_in": lambda a: a * np.nan}, "NaN or infinite"),
        (smp, {k: np.zeros(201, np.float32) for k in ("tau", "a", "b", "c")}, "201 steps; at most 200"),
        (smp, {"tau": lambda t: t + 2.0}, "tau must lie in [0, 1]"),
        (smp, {"c": lambda c: c[:-1]}, "has shape"),
        # A finite table whose samples overflow: a 1e30 gain per step.
        (smp, {"a": lambda a: np.full_like(a, 1e30)}, "the sampler diverged: non-finite samples"),
    ]
    for path, changes, reason in cases:
        export_good(work, config, seeds)
        tamper(path, **changes)
        with pytest.raises(sealed.ArtifactError, match=re.escape(reason)):
            evaluator.evaluate(work, config, private, seeds)
    export_good(work, config, seeds)
    (work / "artifacts" / "sampler.npz").write_bytes(b"not an npz")
    with pytest.raises(sealed.ArtifactError, match="not a readable array file"):
        evaluator.evaluate(work, config, private, seeds)
    (work / "artifacts" / "denoiser.npz").unlink()
    with pytest.raises(sealed.ArtifactError, match="exported no denoiser.npz"):
        evaluator.evaluate(work, config, private, seeds)


# ---------------------------------------------------------------- the search space


@pytest.mark.parametrize("name", ["ddpm", "cosine", "v_prediction", "min_snr", "ddim"])
def test_known_members_match_candidates(name):
    rendered = {}
    exec(compile(ss.render(ss.known()[name])["ddpm.py"], "ddpm.py", "exec"), rendered)
    candidate = load_module(DIFFUSION / "candidates" / f"{name}.py", f"candidate_{name}")
    out, x0, eps = (jax.random.normal(k, (16, 2)) for k in jax.random.split(jax.random.PRNGKey(0), 3))
    for timesteps in (100, 20, 37):
        ab = np.asarray(candidate.schedule(timesteps))
        assert np.allclose(rendered["schedule"](timesteps), ab, rtol=1e-5), timesteps
        levels = jnp.asarray(ab[np.linspace(0, timesteps - 1, 16).astype(int)])
        assert np.allclose(rendered["loss"](out, x0, eps, levels), candidate.loss(out, x0, eps, levels), rtol=1e-5)
        for got, want in zip(rendered["sampler"](jnp.asarray(ab)), candidate.sampler(jnp.asarray(ab)), strict=True):
            assert got.shape == want.shape and np.allclose(got, want, rtol=1e-4, atol=1e-6), timesteps
    assert (DIFFUSION / "candidates" / "ddpm.py").read_text() == (DIFFUSION / "ddpm.py").read_text()


def test_random_members_render_to_recipes_the_gate_accepts(capsys):
    rng = random.Random(20241125)
    pool = list(ss.known().values())
    for i in range(60):
        g = [ss.sample, lambda r: ss.mutate(r.choice(pool), r),
             lambda r: ss.crossover(r.choice(pool), r.choice(pool), r)][i % 3](rng)
        pool.append(g)
        ss.validate(g)
        assert json.loads(json.dumps(g)) == g and "\n" not in ss.describe(g)
        recipe: dict = {}
        exec(compile(ss.render(g)["ddpm.py"], "ddpm.py", "exec"), recipe)
        for timesteps in (100, 20):
            ab = harness.gate_schedule(recipe["schedule"], timesteps)
            harness.gate_loss(recipe["loss"], ab)
            table = harness.gate_sampler(recipe["sampler"], ab, timesteps)
            assert table["c"][-1] == 0.0 and np.all(np.diff(table["tau"]) < 0), ss.describe(g)
    assert sealed.FAIL_MARKER not in capsys.readouterr().err
    assert ss.mutate(pool[0], rng) != pool[0]
    with pytest.raises(ValueError, match="target must be one of"):
        ss.validate({**pool[0], "target": "score"})
    with pytest.raises(ValueError, match=r"gamma must be a number in \[0.5, 20.0\]"):
        ss.validate({**pool[0], "weighting": {"kind": "min_snr", "gamma": 0.0}})


# ---------------------------------------------------------------- end to end: the real CLI and bwrap sandbox


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """A templates folder holding the tiny diffusion template, and a home shared by this module."""
    dest = tmp_path_factory.mktemp("templates")
    write_tiny_diffusion(dest)
    return dest, tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def tiny_fast(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny template trained for only 20 steps (for candidates that must fail), sharing the home."""
    dest = tmp_path_factory.mktemp("templates_fast")
    write_tiny_diffusion(dest, steps="20")
    return dest, tiny[1]


def run_eval(tiny: tuple[Path, Path], *args: str):
    templates, home = tiny
    return scientist("eval", "--template", "diffusion", "--templates-dir", str(templates), "--home", str(home),
                     "--sandbox", "bwrap", *args)


def test_scientist_eval_trains_a_baseline_far_better_than_untrained_or_noise(tiny, untrained, tmp_path):
    """The whole path: data prepared, harness in bwrap, sealed evaluator; the trained DDPM beats both references."""
    out = tmp_path / "run"
    r = run_eval(tiny, "--out", str(out))
    assert r.code == 0, r.text
    info = json.loads((out / "final_info.json").read_text())
    assert info["template"] == "diffusion" and info["metric"] == "mmd" and info["direction"] == "min"
    m = info["metrics"]["mmd"]
    assert info["n"] == 2 and len(m["values"]) == 2 and m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    per_dataset = info["extra"]["per_dataset"]
    # Far better than the same network untrained and than Gaussian noise (about 0.116 and 0.096 here, against
    # 0.046 after these 800 steps), on average and on every data set.
    assert m["mean"] < 0.5 * np.mean(untrained["per_seed"]["mmd"])
    assert m["mean"] < 0.6 * np.mean(per_dataset["mmd_noise"])
    assert np.all(np.array(per_dataset["mmd"]) < np.array(per_dataset["mmd_noise"]))
    assert max(info["metrics"]["memorisation"]["values"]) < 0.2  # no copying
    assert sorted(p.name for p in (out / "work" / "artifacts").iterdir()) == [
        "denoiser.npz", "sampler.npz", "train_log.json"]
    curves = np.array(json.loads((out / "work" / "artifacts" / "train_log.json").read_text())["loss_mean_over_seeds"])
    assert np.all(curves[:, -5:].mean(1) < 0.8 * curves[:, :5].mean(1))  # the loss went down on every data set
    figures = load_module(DIFFUSION / "figures.py", "diffusion_figures")
    made = figures.figures(info, info, tmp_path / "figs")
    assert [f.path.name for f in made] == ["samples.pdf", "mmd_per_dataset.pdf"]
    assert all(f.path.stat().st_size > 1000 for f in made)


def test_scientist_eval_reports_bad_candidates_in_one_line(tiny_fast, tmp_path):
    source = (DIFFUSION / "ddpm.py").read_text()
    bad = {
        "no_sampler": (source.replace("def sampler(", "def not_sampler("), "does not define a function 'sampler'"),
        # Passes the gate (finite table) but the evaluator's samples overflow.
        "explodes": (source + "\n_sampler = sampler\n\ndef sampler(alpha_bar):\n"
                     "    tau, a, b, c = _sampler(alpha_bar)\n    return tau, a * 1e30, b, c\n",
                     "artifact rejected: the sampler diverged"),
    }
    for name, (src, reason) in bad.items():
        path = tmp_path / f"{name}.py"
        path.write_text(src)
        r = run_eval(tiny_fast, "--candidate", str(path))
        assert r.code == 1, r.text
        assert reason in r.err and "Traceback" not in r.text
        assert len([ln for ln in r.err.splitlines() if "failed:" in ln]) == 1


def test_templates_command_lists_diffusion(tmp_path):
    r = scientist("templates", "--home", str(tmp_path))
    assert r.code == 0 and re.search(r"diffusion\s+│\s+mmd\s+│\s+min\s+│\s+8", r.out), r.out

"""The transformer template: a character-level GPT on Debian's fortunes, exported as StableHLO, scored sealed.

Real JAX, real corpus, real bubblewrap; no mocks. The corpus comes from Debian's `fortunes`
package: without it these tests are skipped with the reason (in CI, where setup installs it, they fail).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import shutil
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, copy_template, scientist

from base.template import load_template
from jax_workloads import sealed
from jax_workloads import transformer as tf

TEMPLATE = ROOT / "templates" / "transformer"
UNIFORM_BPC = float(np.log2(tf.VOCAB_SIZE))  # an untrained model's ~6.6 bits

if not tf.FORTUNES.is_dir():
    (pytest.fail if os.environ.get("CI") else pytest.skip)(
        "the fortune corpus is not installed: apt-get install fortunes", allow_module_level=True)


def load_module(path: Path, name: str):
    """Import a template file by path (templates are not packages); its own folder is importable meanwhile."""
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


ev = load_module(TEMPLATE / "evaluate.py", "transformer_evaluate")
ss = load_module(TEMPLATE / "search_space.py", "transformer_search_space")
recipe = load_module(TEMPLATE / "recipe.py", "transformer_recipe")
SPEC = load_template(str(TEMPLATE)).spec

# Small enough that a sandboxed run takes seconds on 2 cores, big enough to learn something.
TINY = {"seeds": "2", "time_s": "120", "memory_mb": "2500", "steps": "200", "batch_size": "8", "checkpoints": "2",
        "eval_batch": "8", "block_size": "16", "d_model": "32", "n_layers": "1", "n_heads": "2",
        "eval_windows": "32"}


def write_tiny_transformer(dest: Path, **overrides: str) -> Path:
    """Copy the transformer template to dest/transformer with TINY settings (and overrides) in its toml."""
    return copy_template(dest, "transformer", {**TINY, **overrides})


# ---------------------------------------------------------------- corpus and split


@pytest.fixture(scope="module")
def split():
    """Training and held-out documents of the shipped split."""
    return ev.split(SPEC.config, SPEC.private)


def test_corpus_split_and_prepared_data(split, tmp_path):
    train, held_out = split
    assert len(train) + len(held_out) > 15000 and abs(len(held_out) / (len(train) + len(held_out)) - 0.1) < 0.001
    assert not set(train) & set(held_out) and (train, held_out) == ev.split(SPEC.config, SPEC.private)
    assert tf.decode(tf.encode("Tab\there, é!\n")) == "Tab\there, ?!\n"
    ev.prepare(tmp_path, SPEC.config, SPEC.private, seeds=4)
    with np.load(tmp_path / "train.npz") as d:
        assert d.files == ["tokens"]  # the training text and nothing else
        text = tf.decode(d["tokens"])
    assert len(text) > 2_000_000 and train[0] in text
    long_held_out = [doc for doc in held_out if len(doc) > 300][:50]
    assert len(long_held_out) == 50 and not any(doc in text for doc in long_held_out)


# ---------------------------------------------------------------- one sandboxed run, shared

SPY = '''

# --- a spy: looks for the held-out text from inside the sandbox, and forges a result ---
import os as _os
from pathlib import Path as _Path

for _path in ("/usr/share/games/fortunes", "/usr/share/games/fortunes/literature", "/usr/share/games"):
    try:
        _os.listdir(_path) if _os.path.isdir(_path) else open(_path).read()
        print("SPY read", _path)
    except OSError as _e:
        print("SPY denied", _path, type(_e).__name__)
print("SPY data", sorted(str(_p) for _p in _Path("data").rglob("*")))
for _forged in ("final_info.json", "../final_info.json", "artifacts/final_info.json"):
    try:
        _Path(_forged).write_text('{"metrics": {"val_bpc": {"mean": 0.0, "values": [0.0, 0.0]}}}')
    except OSError:
        pass
'''


@pytest.fixture(scope="module")
def spy_run(tmp_path_factory):
    """`scientist eval` of the shipped recipe plus a spy, through real bubblewrap, on the tiny template."""
    tmp = tmp_path_factory.mktemp("spy")
    root = write_tiny_transformer(tmp / "templates")
    spy = tmp / "spy.py"
    spy.write_text((TEMPLATE / "recipe.py").read_text() + SPY)
    out = tmp / "run"
    r = scientist("eval", "--template", "transformer", "--templates-dir", str(tmp / "templates"), "--home",
                  str(tmp / "home"), "--sandbox", "bwrap", "--candidate", str(spy), "--out", str(out))
    assert r.code == 0, r.text
    return out, load_template(str(root)).spec


def test_eval_through_docker_trains_and_scores_sealed(tmp_path, docker_host):
    """The same spy in the project's Docker image: flax and jax.export work there, the corpus is absent."""
    from docker_engine import TEST_IMAGE

    write_tiny_transformer(tmp_path / "templates")
    spy = tmp_path / "spy.py"
    spy.write_text((TEMPLATE / "recipe.py").read_text() + SPY)
    out = tmp_path / "run"
    r = scientist("eval", "--template", "transformer", "--templates-dir", str(tmp_path / "templates"), "--home",
                  str(tmp_path / "home"), "--sandbox", "docker", "--image", TEST_IMAGE, "--docker-host", docker_host,
                  "--candidate", str(spy), "--out", str(out))
    assert r.code == 0, r.text
    log = (out / "trace.log").read_text()  # the recipe runs only in the tracer's sandbox
    assert "SPY denied /usr/share/games/fortunes FileNotFoundError" in log and "SPY read" not in log
    assert "SPY data []" in log and "SPY" not in (out / "train.log").read_text()
    values = json.loads((out / "final_info.json").read_text())["metrics"]["val_bpc"]["values"]
    assert len(values) == 2 and all(3.0 < v < 4.2 for v in values), values  # learned; not the forged 0.0


def test_eval_through_bwrap_hides_the_held_out_text(spy_run, split):
    out, _ = spy_run
    log = (out / "trace.log").read_text()  # the recipe runs only in the tracer's sandbox, which has no data
    for path in ("/usr/share/games/fortunes", "/usr/share/games/fortunes/literature"):
        assert f"SPY denied {path} PermissionError" in log
    assert "SPY read" not in log and "SPY data []" in log and "SPY" not in (out / "train.log").read_text()
    with np.load(out / "work" / "data" / "train.npz") as d:
        text = tf.decode(d["tokens"])
    assert not any(doc in text for doc in [doc for doc in split[1] if len(doc) > 300][:50])
    info = json.loads((out / "final_info.json").read_text())
    assert info["metrics"]["val_bpc"]["mean"] > 3.0  # the evaluator's number, not the forged 0.0
    assert len(info["metrics"]["infer_tokens_per_s"]["values"]) == 2


def tiny_model(spec) -> tf.ModelConfig:
    return tf.ModelConfig(**spec.config["model"])


def test_model_learns(spy_run, split):
    out, spec = spy_run
    info = json.loads((out / "final_info.json").read_text())
    trained = info["metrics"]["val_bpc"]["values"]
    curve = np.asarray(info["extra"]["val_bpc_curve"])
    # The same held-out windows scored with an untrained model of the same shape: near uniform, log2 98 = 6.6 bits.
    model = tiny_model(spec)
    fresh = tf.init_params(model, recipe.Block, jax.random.PRNGKey(5))
    exp = jax.export.deserialize(bytearray(tf.export_forward(model, recipe.Block, fresh, 8)))
    windows = tf.eval_windows(tf.encode(tf.join_documents(split[1])), spec.private["eval_windows"],
                              model.block_size, seed=spec.private["eval_seed"])
    untrained = tf.bits_per_char(jax.jit(exp.call), jax.tree_util.tree_leaves(fresh), windows, 8)
    assert untrained > UNIFORM_BPC - 0.1
    assert all(b < 4.2 for b in trained), trained  # 200 tiny steps: about 3.7 bits
    assert curve.shape == (2, 2) and np.all(curve[:, 1] < curve[:, 0])
    assert info["extra"]["params"] == tf.count_params(fresh) and info["extra"]["checkpoint_steps"] == [100, 200]


def test_figures_from_the_evaluators_results(spy_run, tmp_path):
    from papers.figures import FigureError, template_figures

    info = json.loads((spy_run[0] / "final_info.json").read_text())
    figures = template_figures(TEMPLATE, info, info, tmp_path)
    assert [f.label for f in figures] == ["fig:val_bpc_curve", "fig:val_bpc_per_seed"]
    assert all(f.path.stat().st_size > 1000 for f in figures)
    with pytest.raises(FigureError, match="no extra.checkpoint_steps"):
        template_figures(TEMPLATE, {**info, "extra": {}}, info, tmp_path)


BAD_BLOCKS = {
    # Reads position t + 1: a perfect cheat on next-character prediction if the evaluator let it.
    "peeks_ahead": ("x + nn.Dense(self.d_model)(jnp.roll(x, -1, axis=1))", "the model is not causal"),
    # Batch statistics let a row read the continuation held by the next row.
    "mixes_batch": ("x + nn.Dense(self.d_model)(jnp.mean(x, axis=0, keepdims=True))", "mixes the examples"),
    # A LAPACK custom call: harmless here, but the evaluator runs no custom call at all (callbacks are ones).
    "custom_call": ("x * jnp.linalg.cholesky(jnp.eye(2) * (2.0 + 0 * jnp.sum(x)))[0, 0]",
                    "forward.jaxexport contains custom call 'lapack_"),
}


def make_block(expr: str):
    class Bad(nn.Module):
        d_model: int
        n_heads: int

        @nn.compact
        def __call__(self, x):
            return eval(expr, {"nn": nn, "jnp": jnp, "self": self, "x": x})

    return Bad


def write_artifacts(work: Path, model: tf.ModelConfig, block, checkpoints, batch: int = 8) -> None:
    """What the harness exports: artifacts/params.npz ([seeds, checkpoints, ...]) and artifacts/forward.jaxexport."""
    leaves = [np.asarray(x, np.float32) for x in jax.tree_util.tree_leaves(checkpoints)]
    sealed.export_arrays(work / "artifacts" / "params.npz", dict(zip(tf.param_names(len(leaves)), leaves, strict=True)))
    final = jax.tree.map(lambda x: x[0, -1], checkpoints)
    (work / "artifacts" / "forward.jaxexport").write_bytes(tf.export_forward(model, block, final, batch))


def corrupt(work: Path, what: str, spec) -> dict:
    """Damage a copy of the run's work folder; returns the evaluator config to use."""
    art, config, model = work / "artifacts", dict(spec.config), tiny_model(spec)
    params = dict(np.load(art / "params.npz"))
    if what == "no_forward":
        (art / "forward.jaxexport").unlink()
    elif what == "garbage":
        (art / "forward.jaxexport").write_bytes(b"\x00not stablehlo" * 10)
    elif what == "nan":
        params["p000"][1, 1, 0] = np.nan
        sealed.export_arrays(art / "params.npz", params)
    elif what == "missing_array":
        sealed.export_arrays(art / "params.npz", {k: v for k, v in params.items() if k != max(params)})
    elif what == "three_seeds":
        sealed.export_arrays(art / "params.npz", {k: np.concatenate([v, v[:1]]) for k, v in params.items()})
    elif what == "too_big":
        config["max_params"] = 1000
    elif what == "wrong_batch":
        treedef = jax.tree_util.tree_structure(tf.init_params(model, recipe.Block, jax.random.PRNGKey(0)))
        checkpoints = jax.tree_util.tree_unflatten(treedef, [params[k] for k in tf.param_names(len(params))])
        write_artifacts(work, model, recipe.Block, checkpoints, batch=4)
    elif what in BAD_BLOCKS:
        block = make_block(BAD_BLOCKS[what][0])
        fresh = tf.init_params(model, block, jax.random.PRNGKey(0))
        write_artifacts(work, model, block, jax.tree.map(lambda x: jnp.broadcast_to(x, (2, 2, *x.shape)), fresh))
    return config


BAD_ARTIFACTS = {
    "no_forward": "the harness exported no forward.jaxexport",
    "garbage": "not a jax.export artifact",
    "nan": "array 'p000' holds NaN or infinite values",
    "missing_array": "holds arrays",
    "three_seeds": "has shape (3, 2,",
    "too_big": "more than max_params = 1,000",
    "wrong_batch": "takes tokens int32[4,16], expected int32[8,16]",
    **{name: message for name, (_, message) in BAD_BLOCKS.items()},
}


@pytest.mark.parametrize("what", sorted(BAD_ARTIFACTS))
def test_bad_artifacts_are_rejected_with_one_line(what, spy_run, tmp_path):
    out, spec = spy_run
    bad = tmp_path / "work"
    shutil.copytree(out / "work", bad)
    config = corrupt(bad, what, spec)
    with pytest.raises(sealed.ArtifactError) as e:
        ev.evaluate(bad, config, spec.private, seeds=2)
    assert BAD_ARTIFACTS[what] in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the harness's gate


def load_tracer():
    """trace.py and the harness it imports (as `harness`, its name in the sandbox)."""
    sys.modules.pop("harness", None)
    try:
        return load_module(TEMPLATE / "trace.py", "transformer_trace")
    finally:
        sys.modules.pop("harness", None)


# Reads position t + 1 only at the training batch (8 below): the evaluator's forward pass (batch 4) is causal.
SHAPE_DEPENDENT = "x + (x.shape[0] == 8) * nn.Dense(self.d_model)(jnp.roll(x, -1, axis=1))"


def test_gate_rejects_a_non_causal_block_a_bad_loss_and_a_big_model(capsys, tmp_path):
    """The tracer exports each recipe; the harness gates the exports (it never sees the recipe)."""
    trace = load_tracer()
    harness = trace.harness
    small = tf.TrainConfig(tf.ModelConfig(block_size=32, d_model=32, n_layers=1, n_heads=2), steps=100, batch_size=8)
    config = {"max_export_bytes": 10**6, "eval_batch": 4, "model": dataclasses.asdict(small.model)}
    cases = [  # the shipped recipe passes the gate in test_eval_through_bwrap_hides_the_held_out_text
        (make_block(BAD_BLOCKS["peeks_ahead"][0]), recipe.loss, 10**6, "Block rejected: the model is not causal"),
        (make_block(SHAPE_DEPENDENT), recipe.loss, 10**6, "the forward pass for the evaluator is not the trained"),
        (recipe.Block, lambda logits, targets: jnp.mean(logits), 10**6, "loss must return one value per position"),
        (recipe.Block, recipe.loss, 1000, "the model has 20,064 parameters, more than the template's max_params"),
    ]
    for i, (block, loss, max_params, message) in enumerate(cases):
        trace.export_recipe(block, recipe.optimizer, loss, small, config["eval_batch"], tmp_path / str(i))
        with pytest.raises(SystemExit) as e:
            harness.gate(harness.load_recipe(str(tmp_path / str(i)), config), small, max_params)
        assert e.value.code == sealed.CANDIDATE_FAILED
        err = capsys.readouterr().err.strip()
        assert err.startswith(sealed.FAIL_MARKER) and message in err and "\n" not in err, err


# ---------------------------------------------------------------- search space


def random_genomes(n: int = 200) -> list[dict]:
    rng = random.Random(20241125)
    pool, out = list(ss.known().values()), []
    for i in range(n):
        g = (ss.sample(rng) if i % 3 == 0 else ss.mutate(rng.choice(pool), rng) if i % 3 == 1
             else ss.crossover(rng.choice(pool), rng.choice(pool), rng))
        pool.append(g)
        out.append(g)
    return out


def test_search_space_renders_the_shipped_files_and_valid_recipes():
    known = ss.known()
    assert (TEMPLATE / "recipe.py").read_text() == ss.render(known[ss.BASELINE])["recipe.py"]
    shipped = sorted(p.stem for p in (TEMPLATE / "candidates").glob("*.py"))
    assert shipped == ["baseline", "cosine", "label_smoothing", "rmsnorm", "swiglu"]
    for name in shipped:
        assert (TEMPLATE / "candidates" / f"{name}.py").read_text() == ss.render(known[name])["recipe.py"], name
    genomes = random_genomes()
    for g in genomes:
        ss.validate(g)
        assert json.loads(json.dumps(g)) == g and "\n" not in ss.describe(g)
        namespace: dict = {}
        exec(compile(ss.render(g)["recipe.py"], "recipe.py", "exec"), namespace)
        assert issubclass(namespace["Block"], nn.Module) and callable(namespace["optimizer"])
    assert len({json.dumps(g, sort_keys=True) for g in genomes}) > 150  # mostly new members, not repeats
    assert ss.mutate(known["baseline"], random.Random(1)) == ss.mutate(known["baseline"], random.Random(1))
    for bad in ({**known["baseline"], "norm": "batchnorm"}, {**known["baseline"], "peak_lr": 1.0},
                {**known["baseline"], "parallel": 1}, {"norm": "layernorm"}):
        with pytest.raises(ValueError):
            ss.validate(bad)


def test_every_block_variant_fits_the_parameter_budget_and_schedules_reach_their_values():
    base = ss.known()["baseline"]
    budget, model = SPEC.config["max_params"], tf.ModelConfig(**SPEC.config["model"])
    for norm in ss.CHOICES["norm"]:
        for mlp in ss.CHOICES["mlp"]:
            for parallel in ss.CHOICES["parallel"]:
                g = {**base, "norm": norm, "mlp": mlp, "parallel": parallel, "mlp_ratio": 4}
                namespace: dict = {}
                exec(ss.render(g)["recipe.py"], namespace)
                shapes = jax.eval_shape(lambda ns=namespace: tf.init_params(model, ns["Block"], jax.random.PRNGKey(0)))
                assert tf.count_params(shapes) <= budget, ss.describe(g)
    # With a constant gradient Adam's normalised step is exactly 1, so the updates of an undecayed scalar read
    # out the learning-rate schedule itself: warmup from 0 to the peak over 10 steps, then constant or decaying.
    for schedule, last in (("constant", 0.003), ("cosine", 0.0003), ("linear", 0.0003)):
        namespace = {}
        exec(ss.render({**base, "schedule": schedule})["recipe.py"], namespace)
        tx = namespace["optimizer"](100)

        def step(state, _, tx=tx):
            updates, state = tx.update({"b": jnp.float32(1.0)}, state, {"b": jnp.float32(0.0)})
            return state, -updates["b"]

        _, lrs = jax.lax.scan(step, tx.init({"b": jnp.float32(0.0)}), None, length=100)
        assert float(lrs[0]) == 0.0 and float(lrs[10]) == pytest.approx(0.003, rel=1e-3), schedule
        assert float(lrs[-1]) == pytest.approx(last, rel=0.15), schedule


def test_evolve_proposer_drives_the_search_space():
    from base.records import ArchiveEntry
    from scientist.proposers import Attempt, IdeaContext
    from scientist.proposers.evolve import EvolveProposer

    proposer = EvolveProposer(ss, direction="min", seed=3, baseline_metric=3.0)
    first = proposer.next_idea(0, [])
    second = proposer.next_idea(1, [ArchiveEntry(idea=first, metric=2.9)])
    assert first.genome != second.genome and first == proposer.next_idea(0, [])
    ok = Attempt(run_idx=1, attempt=1, status="ok", sources=None, metric=2.9, meta={"genome": first.genome})
    ctx = IdeaContext(idx=0, idea=first, run_idx=2, runs=3, attempt=1, attempts=2, files={}, history=[ok],
                      baseline="3.0", direction="min")
    proposal = proposer.propose(ctx)
    ss.validate(proposal.meta["genome"])
    assert proposal.meta["genome"] != first.genome and set(proposal.sources) == {"recipe.py"}


MISSING = ("no fortune files under /nonexistent/fortunes: install Debian's `fortunes` package "
           "(apt-get install fortunes)")


def test_missing_corpus_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as e:  # the evaluator process exits with this line, and no traceback
        ev.prepare(tmp_path, {**SPEC.config, "corpus_dir": "/nonexistent/fortunes"}, SPEC.private, seeds=2)
    assert e.value.code == MISSING


@pytest.mark.slow
def test_baseline_is_cached_and_a_cheating_candidate_fails_with_one_line(tmp_path):
    templates = tmp_path / "templates"
    write_tiny_transformer(templates, vmap_seeds="2")  # both seeds side by side: the GPU path, jax.vmap
    home = tmp_path / "home"
    args = ("--templates-dir", str(templates), "--home", str(home))
    r = scientist("baseline", "--template", "transformer", *args)
    assert r.code == 0, r.text
    again = scientist("baseline", "--template", "transformer", *args)
    assert again.code == 0 and "cached from run" in again.out
    cheat = tmp_path / "cheat.py"
    cheat.write_text((TEMPLATE / "recipe.py").read_text().replace(
        "return x + MLP(self.d_model)(nn.LayerNorm()(x))",
        "return x + MLP(self.d_model)(nn.LayerNorm()(jnp.roll(x, -1, axis=1)))"))
    bad = scientist("eval", "--template", "transformer", "--candidate", str(cheat), *args)
    assert bad.code == 1 and "Block rejected: the model is not causal" in bad.err and "Traceback" not in bad.text
    assert len([line for line in bad.err.splitlines() if "failed:" in line]) == 1
    cosine = scientist("eval", "--template", "transformer", "-c", str(TEMPLATE / "candidates" / "cosine.py"), *args)
    assert cosine.code == 0 and "p=" in cosine.out
    write_tiny_transformer(tmp_path / "broken", corpus_dir='"/nonexistent/fortunes"')
    missing = scientist("eval", "--template", "transformer", "--templates-dir", str(tmp_path / "broken"), "--home",
                        str(home))
    assert missing.code == 2 and "Traceback" not in missing.text
    assert " ".join(missing.err.split()) == f"error: preparing the transformer data failed: {MISSING}"

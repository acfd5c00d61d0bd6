"""Diffusion harness (fixed; runs inside the sandbox): train with the candidate recipe, export the model.

Reads config.json and data/train.npz from the work folder and the recipe as the tracer
(trace.py) left it in exports/: the loss as StableHLO with its derivative (exports/loss,
checked to be plain computation) and the schedule and sampler table as plain arrays
(exports/recipe.npz). This process never imports ddpm.py. It checks the arrays as the
gates below check the candidate's functions, gates the loss on one minibatch, trains one
denoiser per seed x data set in one compiled call, and exports only plain arrays: the
denoisers' parameters (artifacts/denoiser.npz) and the sampler's coefficient table
(artifacts/sampler.npz). It never samples for scoring and never scores anything.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import diffusion as df  # noqa: E402
from jax_workloads import exported, sealed  # noqa: E402

TABLE = ("tau", "a", "b", "c")
RECIPE = "exports/recipe.npz"  # alpha_bar and the sampler table, as the tracer wrote them


def train_config(config: dict) -> df.TrainConfig:
    """The training settings of template.toml's [config.train] and [config.net]."""
    return df.TrainConfig(**config["train"], net=df.NetConfig(**config["net"]))


def _floats(x, what: str) -> np.ndarray:
    try:
        out = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - whatever the candidate returned
        sealed.fail(f"{what} is not an array: {sealed.describe(e)}")
    if not np.issubdtype(out.dtype, np.floating) and not np.issubdtype(out.dtype, np.integer):
        sealed.fail(f"{what} must hold numbers, got dtype {out.dtype}")
    if not np.all(np.isfinite(out)):
        sealed.fail(f"{what} holds NaN or infinite values")
    return out.astype(np.float32)


def gate_schedule(schedule, timesteps: int) -> np.ndarray:
    """alpha_bar [T], finite and inside (0, 1)."""
    try:
        alpha_bar = schedule(timesteps)
    except Exception as e:  # noqa: BLE001 - any error here is the candidate's
        sealed.fail(f"schedule({timesteps}) raised: {sealed.describe(e)}")
    return check_schedule(alpha_bar, timesteps)


def check_schedule(alpha_bar, timesteps: int) -> np.ndarray:
    """The values of schedule(timesteps), checked: float32 [T], finite and inside (0, 1)."""
    alpha_bar = _floats(alpha_bar, f"schedule({timesteps})")
    if alpha_bar.shape != (timesteps,):
        sealed.fail(f"schedule({timesteps}) must return shape ({timesteps},); it returned shape {alpha_bar.shape}")
    if not np.all((alpha_bar > 0) & (alpha_bar < 1)):
        sealed.fail(f"schedule({timesteps}) must lie strictly between 0 and 1; its range is "
                    f"[{alpha_bar.min():.3g}, {alpha_bar.max():.3g}]")
    return alpha_bar


def gate_loss(loss, alpha_bar: np.ndarray, n: int = 8) -> None:
    """One finite loss per example, with finite gradients, on a tiny batch of n examples.

    The exported loss takes exactly one minibatch: the harness gates it with n = batch_size.
    """
    k_out, k_x0, k_eps = jax.random.split(jax.random.PRNGKey(0), 3)
    out, x0, eps = (jax.random.normal(k, (n, 2)) for k in (k_out, k_x0, k_eps))
    ab = jnp.asarray(alpha_bar[np.linspace(0, alpha_bar.size - 1, n).astype(int)])
    try:
        value = jnp.asarray(sealed.run_once(loss, out, x0, eps, ab))
        grad = jax.grad(lambda o: jnp.mean(loss(o, x0, eps, ab)))(out)
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"loss raised on a tiny batch: {sealed.describe(e)}")
    if value.shape != (n,):
        sealed.fail(f"loss must return one value per example, shape ({n},); it returned shape {value.shape}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        sealed.fail(f"loss must return floating-point values, got dtype {value.dtype}")
    if not bool(jnp.all(jnp.isfinite(value))):
        sealed.fail("loss returned NaN or infinite values on a tiny batch")
    if not bool(jnp.all(jnp.isfinite(grad))):
        sealed.fail("loss has NaN or infinite gradients on a tiny batch")


def gate_sampler(sampler, alpha_bar: np.ndarray, max_steps: int) -> dict[str, np.ndarray]:
    """The sampler's table {tau, a, b, c}: four finite 1-D arrays of one length K in 1..max_steps."""
    try:
        # Called eagerly: a sampler may use numpy on concrete values (e.g. to pick DDIM steps).
        table = sampler(jnp.asarray(alpha_bar))
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"sampler raised: {sealed.describe(e)}")
    if not isinstance(table, tuple | list) or len(table) != len(TABLE):
        sealed.fail("sampler must return four arrays (tau, a, b, c)")
    return check_table(dict(zip(TABLE, table, strict=True)), max_steps)


def check_table(table: dict, max_steps: int) -> dict[str, np.ndarray]:
    """The sampler's table, checked: four finite float32 1-D arrays of one length K in 1..max_steps, tau in [0, 1]."""
    table = {name: _floats(table[name], f"sampler's {name}") for name in TABLE}
    shapes = {name: x.shape for name, x in table.items()}
    k = table["tau"].shape[0] if table["tau"].ndim == 1 else 0
    if any(s != (k,) for s in shapes.values()) or not 1 <= k <= max_steps:
        sealed.fail(f"sampler must return four 1-D arrays of one length K in 1..{max_steps}; got shapes "
                    + ", ".join(f"{n} {s}" for n, s in shapes.items()))
    if not np.all((table["tau"] >= 0) & (table["tau"] <= 1)):
        sealed.fail("sampler's tau (the network's time input) must lie in [0, 1]")
    return table


def load_recipe(config: dict, tc: df.TrainConfig) -> tuple:
    """The traced recipe (loss, alpha_bar, table) from exports/, checked as the gates check the candidate's own.

    Everything in exports/ was written by a process that ran the candidate: untrusted data.
    """
    try:
        loss = exported.import_function("exports/loss")
        with np.load(RECIPE, allow_pickle=False) as d:
            arrays = {k: d[k] for k in d.files}
    except sealed.ArtifactError as e:
        sealed.fail(f"the traced recipe was refused: {e}")
    except Exception as e:  # noqa: BLE001 - a missing or unreadable file
        sealed.fail(f"the traced recipe was refused: {Path(RECIPE).name} is not readable ({sealed.describe(e)})")
    if set(arrays) != {"alpha_bar", *TABLE}:
        sealed.fail(f"the traced recipe was refused: {Path(RECIPE).name} holds {sorted(arrays)}")
    alpha_bar = check_schedule(arrays["alpha_bar"], tc.timesteps)
    table = check_table(arrays, config["max_sampler_steps"])
    gate_loss(loss, alpha_bar, tc.batch_size)
    return loss, alpha_bar, table


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    tc = train_config(config)
    loss, alpha_bar, table = load_recipe(config, tc)
    with np.load("data/train.npz") as d:
        points = jnp.asarray(d["points"])  # [S, D, N, 2]
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), seeds * len(df.DATASETS))
    rngs = rngs.reshape(seeds, len(df.DATASETS), *rngs.shape[1:])
    sweep = df.make_sweep(tc, lambda timesteps: jnp.asarray(alpha_bar), loss)
    clock.lap("setup")
    try:
        compiled = sweep.lower(rngs, points).compile()
        clock.lap("compile")
        params, curves = jax.block_until_ready(compiled(rngs, points))
        clock.lap("train")
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"training failed: {sealed.describe(e)}")
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    finite = np.all([np.isfinite(v).reshape(seeds, len(df.DATASETS), -1).all(-1) for v in params.values()], 0)
    if not finite.all():
        bad = sorted({df.DATASETS[d] for d in np.where(~finite)[1]})
        sealed.fail(f"training diverged: non-finite denoiser parameters on {', '.join(bad)}")
    sealed.export_arrays("artifacts/denoiser.npz", params)
    sealed.export_arrays("artifacts/sampler.npz", table)
    # The loss curves are for figures only; the evaluator ignores them.
    step = max(1, curves.shape[-1] // 50)
    Path("artifacts/train_log.json").write_text(json.dumps({
        "datasets": list(df.DATASETS), "step": step,
        "loss_mean_over_seeds": np.asarray(curves[..., ::step]).mean(0).tolist(),
    }))
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()

"""Diffusion evaluator (trusted; never imports the candidate).

`prepare` makes the training points outside the sandbox from a private seed.
`evaluate` loads the exported denoiser parameters and the sampler's coefficient
table, checks them, runs the fixed sampling loop itself with its own noise, and
scores each seed's samples per data set against held-out points that training
never saw: an RBF-kernel MMD, with samples that copy training points (found by
comparing their nearest-neighbour distances to the training and the held-out
points) counted as worthless as Gaussian noise.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import diffusion as df
from jax_workloads import sealed
from jax_workloads.seeds import seed_key

TABLE = ("tau", "a", "b", "c")
FIGURE_POINTS = 400  # samples and held-out points per data set kept in `extra` for figures


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Write data/train.npz: `points` [seeds, data sets, N, 2], the training draws of every data set."""
    points = df.make_points(private["data_seed"], seeds, config["train_points"])
    data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "train.npz", points=np.asarray(points, np.float32))


def net_config(config: dict) -> df.NetConfig:
    """The fixed denoiser's architecture, from [config.net]."""
    return df.NetConfig(**config["net"])


def expected_params(config: dict, seeds: int) -> dict:
    """Names, shapes and dtypes of the exported denoisers: one per seed and data set."""
    lead = (seeds, len(df.DATASETS))
    return {k: ((*lead, *s), "float32") for k, s in df.param_shapes(net_config(config)).items()}


def load_table(path: Path, max_steps: int) -> dict[str, np.ndarray]:
    """The sampler's table {tau, a, b, c}, each [K] float32 and finite, K in 1..max_steps, tau in [0, 1]."""
    try:
        with np.load(path, allow_pickle=False) as data:
            tau_shape = data["tau"].shape if "tau" in data.files else None
    except Exception:  # noqa: BLE001 - load_arrays below names the problem
        tau_shape = None
    k = tau_shape[0] if tau_shape is not None and len(tau_shape) == 1 else 1
    if not 1 <= k <= max_steps:
        raise sealed.ArtifactError(f"{path.name}: the sampler has {k} steps; at most {max_steps} are allowed")
    table = sealed.load_arrays(path, {name: ((k,), "float32") for name in TABLE})
    if not np.all((table["tau"] >= 0) & (table["tau"] <= 1)):
        raise sealed.ArtifactError(f"{path.name}: tau must lie in [0, 1]")
    return table


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed sample-quality metrics of the exported models, plus samples and details for figures."""
    net = net_config(config)
    ev = config["eval"]
    params = sealed.load_arrays(work / "artifacts" / "denoiser.npz", expected_params(config, seeds))
    table = load_table(work / "artifacts" / "sampler.npz", config["max_sampler_steps"])
    params = {k: jnp.asarray(v) for k, v in params.items()}
    table = {k: jnp.asarray(v) for k, v in table.items()}

    # The training points are remade from the private seed, never read back from the sandbox's folder.
    n = config["train_points"]
    train = df.make_points(private["data_seed"], seeds, n)
    heldout = df.make_points(private["heldout_seed"], seeds, n)
    m, n_sets = ev["samples"], len(df.DATASETS)
    keys = jax.random.split(seed_key(private["sample_seed"]), seeds * n_sets * 2)
    sample_keys = keys[: seeds * n_sets].reshape(seeds, n_sets, -1)
    noise = jax.vmap(lambda k: jax.random.normal(k, (m, 2)))(keys[seeds * n_sets:]).reshape(seeds, n_sets, m, 2)

    draw = jax.jit(jax.vmap(jax.vmap(lambda p, k: df.sample(p, table, k, m, net))))
    samples = np.asarray(draw(params, sample_keys))
    bad = ~np.isfinite(samples).all(axis=(2, 3))
    if bad.any():
        s, d = map(int, np.argwhere(bad)[0])
        raise sealed.ArtifactError(f"the sampler diverged: non-finite samples for seed {s} on {df.DATASETS[d]} "
                                   f"({int(bad.sum())} of {bad.size} models)")

    def score_seed(args):
        x, tr, ho, nz = args
        return jax.vmap(lambda *a: df.score(*a, ev["bandwidth"], ev["memorisation_tolerance"]))(x, tr, ho, nz)

    # lax.map over seeds keeps only one seed's [N, N] kernel matrices in memory at a time.
    scores = jax.jit(lambda *a: jax.lax.map(score_seed, a))(jnp.asarray(samples), train, heldout, noise)
    scores = {k: np.asarray(v, float) for k, v in scores.items()}  # each [S, D]

    per_seed = {
        "mmd": scores["mmd"].mean(1).tolist(),
        "mmd_raw": scores["mmd_raw"].mean(1).tolist(),
        "memorisation": scores["memorisation"].max(1).tolist(),
    }
    for d, name in enumerate(df.DATASETS):
        per_seed[f"mmd_{name}"] = scores["mmd"][:, d].tolist()
    extra = {
        "datasets": list(df.DATASETS),
        "sampler_steps": int(table["tau"].shape[0]),
        "bandwidth": ev["bandwidth"], "memorisation_tolerance": ev["memorisation_tolerance"],
        "samples_per_model": m, "heldout_points": n,
        # mmd, mmd_raw, mmd_noise, memorisation and copied, each [seeds][data sets].
        "per_dataset": {k: np.round(v, 6).tolist() for k, v in scores.items()},
        # Seed 0's samples and held-out points, rounded: enough to draw, small enough for the store.
        "figure_samples": np.round(samples[0, :, :FIGURE_POINTS], 3).tolist(),
        "figure_heldout": np.round(np.asarray(heldout[0, :, :FIGURE_POINTS]), 3).tolist(),
    }
    return {"per_seed": per_seed, "extra": extra}

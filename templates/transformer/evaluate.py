"""Transformer evaluator (trusted; never imports the candidate's recipe).

`prepare` reads the fortune corpus, sets aside the held-out documents (a seeded choice whose
seed is in [private]) and writes only the training text, data/train.npz. `evaluate` reads the
corpus again itself to rebuild the held-out text, deserializes the exported forward pass
(StableHLO: no Python, no callbacks, no I/O), loads the parameters, rejects a model that is not
causal or that mixes the examples of a batch, and scores every seed at every checkpoint in bits
per character of held-out text. It also times inference on the held-out windows.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jax_workloads import sealed
from jax_workloads import transformer as tf


def split(config: dict, private: dict) -> tuple[list[str], list[str]]:
    """Training and held-out documents: a seeded random `val_fraction` of the distinct fortunes is held out."""
    docs = tf.fortune_documents(Path(config["corpus_dir"]))
    order = np.random.default_rng(private["split_seed"]).permutation(len(docs))
    n_val = round(private["val_fraction"] * len(docs))
    return [docs[i] for i in order[n_val:]], [docs[i] for i in order[:n_val]]


def prepare(data_dir: Path, config: dict, private: dict, seeds: int) -> None:
    """Write data/train.npz: the training documents' text as character ids, and nothing held out."""
    try:
        train, _ = split(config, private)
    except tf.CorpusMissing as e:
        raise SystemExit(str(e)) from None  # one line for the user, no traceback
    data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "train.npz", tokens=tf.encode(tf.join_documents(train)))


def model_config(config: dict) -> tf.ModelConfig:
    """The GPT's shape from [config.model]."""
    return tf.ModelConfig(**config["model"])


def load_model(work: Path, config: dict, seeds: int) -> tuple[jax.export.Exported, dict[str, np.ndarray]]:
    """The exported forward pass and the parameter arrays [seeds, checkpoints, ...], checked."""
    mc = model_config(config)
    exp = sealed.load_export(work / "artifacts" / "forward.jaxexport", config["max_export_bytes"],
                             sealed.NO_CUSTOM_CALLS)
    tf.check_forward(exp, config["eval_batch"], mc.block_size, mc.vocab_size)
    shapes = [a.shape for a in exp.in_avals[:-1]]
    n = sum(int(np.prod(s)) for s in shapes)
    if n > config["max_params"]:
        raise sealed.ArtifactError(f"the model has {n:,} parameters, more than max_params = {config['max_params']:,}")
    k = config["checkpoints"]
    expected = {name: ((seeds, k, *shape), "float32") for name, shape in zip(tf.param_names(len(shapes)), shapes,
                                                                              strict=True)}
    return exp, sealed.load_arrays(work / "artifacts" / "params.npz", expected)


def evaluate(work: Path, config: dict, private: dict, seeds: int) -> dict:
    """Per-seed held-out bits per character and inference speed, plus the validation curve for figures."""
    exp, params = load_model(work, config, seeds)
    mc, batch, k = model_config(config), config["eval_batch"], config["checkpoints"]
    _, held_out = split(config, private)
    windows = tf.eval_windows(tf.encode(tf.join_documents(held_out)), private["eval_windows"], mc.block_size,
                              seed=private["eval_seed"])
    forward = jax.jit(exp.call)
    names = tf.param_names(len(params))
    probe = windows[:batch, :-1]  # one batch of held-out inputs, for the leak check and the timing

    def leaves(seed: int, checkpoint: int) -> list[jax.Array]:
        return [jnp.asarray(params[name][seed, checkpoint]) for name in names]

    curves, speed = [], []
    for s in range(seeds):
        final = leaves(s, k - 1)
        leak = tf.leak_check(forward, final, probe, private["eval_seed"] + s)
        if leak is not None:
            raise sealed.ArtifactError(f"seed {s}: {leak}")
        curve = [tf.bits_per_char(forward, leaves(s, c), windows, batch) for c in range(k)]
        if not np.all(np.isfinite(curve)):
            raise sealed.ArtifactError(f"seed {s}: the model's predictions on held-out text are not finite")
        curves.append(curve)
        speed.append(tf.tokens_per_second(forward, final, jnp.asarray(probe)))
    steps = config["steps"]
    return {
        "per_seed": {"val_bpc": [c[-1] for c in curves], "infer_tokens_per_s": speed},
        "extra": {
            "checkpoint_steps": [steps * (c + 1) // k for c in range(k)],
            "val_bpc_curve": curves,
            "params": sum(int(np.prod(a.shape[2:])) for a in params.values()),
            "held_out_chars": int(windows.shape[0] * mc.block_size),
            "held_out_documents": len(held_out),
            "uniform_bpc": float(np.log2(mc.vocab_size)),
        },
    }

"""DiscoPOP harness (fixed; runs inside the sandbox): train with the candidate loss, export the policy.

Reads config.json and data/train.npz from the work folder and the candidate's loss as the tracer
exported it (exports/loss: StableHLO, checked to be plain computation; this process never imports
loss.py), gates it on tiny inputs, trains the policy for every seed x beta in one compiled call,
and exports only plain arrays (artifacts/policy.npz). It never scores anything.
"""

import time

STARTED = time.time()

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jax_workloads import exported, sealed  # noqa: E402
from jax_workloads import preference as pf  # noqa: E402

# The gate's tiny batch: policy chosen, policy rejected, reference chosen and reference rejected
# log-probs, exactly the values `-1 - 3 * uniform` of jax.random with PRNGKey(0) split four ways
# (tests/test_cheaper_runs.py checks this). Written out because compiling the PRNG costs every
# run about 0.3 s.
GATE_LOGPS = (
    (-3.5269423, -1.547136, -1.6815343, -1.3621769, -1.5754404, -3.1660452, -3.2963367, -1.4576213),
    (-1.0218815, -1.0626736, -2.7442794, -2.085514, -1.6691132, -1.357865, -1.3763168, -2.85049),
    (-3.7073483, -3.7368784, -2.0231428, -1.6602733, -2.94513, -2.5226057, -3.151613, -1.6769234),
    (-1.8009684, -3.2018504, -3.8611693, -1.6286247, -1.0269562, -3.4445777, -3.78472, -1.8272351),
)


def gate(loss, batch: int) -> None:
    """Cheap check before minutes are spent: right shape, finite values and gradients.

    The export takes one minibatch of `batch` examples: the gate's values, repeated to that length.
    """
    logps = [np.resize(np.asarray(row, np.float32), batch) for row in GATE_LOGPS]
    n = batch

    def probe(pc, pr, rc, rr, beta):
        grad = jax.grad(lambda pc: jnp.mean(loss(pc, pr, rc, rr, beta)))(pc)
        return loss(pc, pr, rc, rr, beta), grad

    try:
        # One compiled probe: the gradient run op by op costs some thirty tiny compiles.
        out, grad = sealed.run_once(probe, *logps, jnp.float32(0.1))
        out = jnp.asarray(out)
    except Exception as e:  # noqa: BLE001 - any error here is the candidate's
        sealed.fail(f"loss raised on a tiny batch: {sealed.describe(e)}")
    if out.shape != (n,):
        sealed.fail(f"loss must return one value per example, shape ({n},); it returned shape {out.shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        sealed.fail(f"loss must return floating-point values, got dtype {out.dtype}")
    if not bool(jnp.all(jnp.isfinite(out))):
        sealed.fail("loss returned NaN or infinite values on a tiny batch")
    if not bool(jnp.all(jnp.isfinite(grad))):
        sealed.fail("loss has NaN or infinite gradients on a tiny batch")


def main() -> None:
    clock = sealed.Stopwatch(STARTED)
    cfg = json.loads(Path("config.json").read_text())
    config, seeds = cfg["config"], cfg["seeds"]
    try:
        loss = exported.import_function("exports/loss")
    except sealed.ArtifactError as e:
        sealed.fail(f"the traced loss was refused: {e}")
    gate(loss, min(config["train"]["batch_size"], config["pairs"]))  # the minibatch make_train draws
    with np.load("data/train.npz") as d:
        prompts = pf.Prompts(jnp.asarray(d["features"]), jnp.asarray(d["ref_logps"]))
        prefs = pf.Preferences(jnp.asarray(d["prompt"]), jnp.asarray(d["chosen"]), jnp.asarray(d["rejected"]))
    betas = jnp.asarray(config["betas"], jnp.float32)
    rngs = jax.random.split(jax.random.PRNGKey(config["train_seed"]), seeds)
    sweep = pf.make_sweep(pf.TrainConfig(**config["train"]), loss)
    clock.lap("setup")
    try:
        compiled = sweep.lower(rngs, prompts, prefs, betas).compile()
        clock.lap("compile")
        params, curves = jax.block_until_ready(compiled(rngs, prompts, prefs, betas))
        clock.lap("train")
    except Exception as e:  # noqa: BLE001
        sealed.fail(f"training failed: {sealed.describe(e)}")
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    finite = np.all([np.isfinite(v).reshape(seeds, len(betas), -1).all(-1) for v in params.values()], axis=0)
    if not finite.all():
        bad = sorted({float(b) for b in np.asarray(betas)[np.where(~finite)[1]]})
        sealed.fail(f"training diverged: non-finite policy parameters at beta {bad}")
    sealed.export_arrays("artifacts/policy.npz", params)
    # The loss curve is for figures only; the evaluator ignores it.
    step = max(1, curves.shape[-1] // 50)
    Path("artifacts/train_log.json").write_text(json.dumps({
        "betas": config["betas"], "step": step,
        "loss_mean_over_seeds": np.asarray(curves[..., ::step]).mean(0).tolist(),
    }))
    clock.lap("export")
    clock.save("timings.json")


if __name__ == "__main__":
    main()

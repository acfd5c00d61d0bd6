"""The DiscoPOP metric credits only what was trained: DPO with beta times s scores as DPO, and a sweep that
trains a worse policy next to the budget (which the old beta-path reading credited with +0.024, p < 0.001)
gains nothing.

Through the real CLI, sandbox and evaluator at the template's own size (8 seeds x 8 betas), so
slow (five runs of about 20-60 s on 2 cores): `pytest -m slow tests/test_discopop_metric.py`.
"""

import json

import pytest
from conftest import scientist

SCALES = [0.5, 1.45, 2.0]


def _rescaled_dpo(scale: float) -> str:
    return f'''import jax


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    z = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return -jax.nn.log_sigmoid({scale} * beta * z)
'''


# DPO, except that beta = 0.5 trains the unbounded margin: a worse policy next to the two betas whose policies
# straddle the budget, which bent the old interpolated path upward (the template README: +0.024 there).
MARGIN_AT_HALF = '''import jax
import jax.numpy as jnp


def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    return jnp.where(jnp.abs(beta - 0.5) < 0.01, -rho, -jax.nn.log_sigmoid(beta * rho))
'''


@pytest.mark.slow
def test_rescaled_beta_scores_as_dpo_and_a_worse_neighbour_gains_nothing(tmp_path):
    home = tmp_path / "home"
    base = scientist("baseline", "--template", "discopop", "--home", str(home), "--sandbox", "bwrap", timeout=900)
    assert base.code == 0, base.text
    [info] = (home / "runs" / "discopop").glob("*-baseline/final_info.json")
    dpo = json.loads(info.read_text())["metrics"]["reward_gain_at_kl"]
    for scale in SCALES:
        candidate = tmp_path / f"dpo_x{scale}.py"
        candidate.write_text(_rescaled_dpo(scale))
        out = tmp_path / f"run_x{scale}"
        r = scientist("eval", "--template", "discopop", "--home", str(home), "--sandbox", "bwrap", "-c",
                      str(candidate), "--out", str(out), timeout=900)
        assert r.code == 0, r.text
        got = json.loads((out / "final_info.json").read_text())["metrics"]["reward_gain_at_kl"]
        assert dpo["ci95"][0] <= got["mean"] <= dpo["ci95"][1], (scale, got, dpo)
        row = [line for line in r.out.splitlines() if line.startswith(f"│ dpo_x{scale} ")]
        assert row and "no significant difference" in row[0], (scale, r.out)  # never "better"
    candidate = tmp_path / "margin.py"
    candidate.write_text(MARGIN_AT_HALF)
    r = scientist("eval", "--template", "discopop", "--home", str(home), "--sandbox", "bwrap", "-c", str(candidate),
                  "--out", str(tmp_path / "run_margin"), timeout=900)
    assert r.code == 0, r.text
    got = json.loads((tmp_path / "run_margin" / "final_info.json").read_text())["metrics"]["reward_gain_at_kl"]
    assert got["mean"] <= dpo["mean"] + 1e-4, (got, dpo)  # DPO's policies but one, and a worse one: DPO at most
    row = [line for line in r.out.splitlines() if line.startswith("│ margin ")]
    assert row and "better" not in row[0], r.out

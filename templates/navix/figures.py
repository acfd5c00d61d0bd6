"""NAVIX figures for papers: learning curves, and the held-out success rate per environment, best against baseline.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in the sandbox); it reads
only the evaluator's `extra` of each final_info.json: "envs", "per_env_success_rate" [seeds][envs],
"episodes_per_env", and "train_curves" (one per environment: "steps" [points], "solved" and "return"
[seeds][points], the harness's own training-episode statistics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from papers.figures import (
    BASELINE_COLOR,
    RUN_COLOR,
    Figure,
    FigureError,
    curve_with_band,
    figure_style,
    mean_ci95,
    new_figure,
    per_seed,
    rate_bars,
    read_extra,
    save_figure,
    seeds_phrase,
    texttt,
)

BEST = ("best candidate", RUN_COLOR)
BASELINE = ("baseline agent", BASELINE_COLOR)
RATE = (0.0, 1.0)  # success rates, and so their intervals, live in [0, 1]


def _short(env_id: str) -> str:
    """A tick label: "Navix-DoorKey-5x5-v0" -> "DoorKey-5x5"."""
    return env_id.removeprefix("Navix-").removesuffix("-v0")


def learning_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Training-episode success against environment steps, averaged over the suite, mean and 95% band over seeds."""
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for extra, (label, color) in ((base, BASELINE), (best, BEST)):
            curves = extra["train_curves"]
            if len(curves) != len(extra["envs"]):
                raise FigureError("extra.train_curves must hold one curve per environment")
            steps = np.asarray(curves[0]["steps"], float)
            solved = np.mean([per_seed(c["solved"], steps.size, "extra.train_curves.solved") for c in curves], 0)
            curve_with_band(ax, steps / 1e3, mean_ci95(solved, clip=RATE), color, label)
            ns.append(solved.shape[0])
        ax.set_xlabel("environment steps per seed and environment (thousands)")
        ax.set_ylabel("successful training episodes")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left")
        path = save_figure(fig, out_dir / "learning_curves.pdf")
    caption = (
        "Learning curves: the fraction of training episodes (layouts drawn by NAVIX from the training keys, played "
        "by the stochastic policy) whose last completed episode reached the goal, averaged over the environments of "
        f"the suite, against environment steps; lines are the mean over {seeds_phrase(ns[1], ns[0])}, bands 95\\% "
        "t-intervals over seeds (clipped to $[0, 1]$). These are the harness's own training statistics; the metric "
        "is measured separately by the sealed evaluator on held-out layouts, with actions sampled by its own keys."
    )
    return Figure(path=path, caption=caption, label="fig:learning_curves")


def per_env_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Held-out success rate per environment: grouped bars with 95% intervals over seeds."""
    envs = base["envs"]
    if best["envs"] != envs:
        raise FigureError("the best candidate and the baseline were scored on different environments")
    path, ns = rate_bars([(base, *BASELINE), (best, *BEST)], "per_env_success_rate", envs,
                         [_short(name) for name in envs], "NAVIX environment", "held-out success rate",
                         out_dir / "success_rate_per_env.pdf", clip=RATE)
    caption = (
        f"Success rate per environment on held-out layouts ({base['episodes_per_env']} per environment, drawn by "
        f"the sealed evaluator from a private seed), actions sampled from the policy with the evaluator's keys: "
        f"mean over {seeds_phrase(ns[1], ns[0])}, error "
        f"bars 95\\% t-intervals over seeds (clipped to $[0, 1]$). The metric {texttt('success_rate')} is the mean "
        f"of these bars. Environments: {', '.join(texttt(name) for name in envs)}."
    )
    return Figure(path=path, caption=caption, label="fig:success_rate_per_env")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """Learning curves and the held-out success rate per environment, best candidate against the baseline agent."""
    keys = ("envs", "per_env_success_rate", "episodes_per_env", "train_curves")
    best = read_extra(best_final_info, "best candidate's", keys)
    base = read_extra(baseline_final_info, "baseline's", keys)
    out_dir = Path(out_dir)
    return [learning_curve_figure(best, base, out_dir), per_env_figure(best, base, out_dir)]

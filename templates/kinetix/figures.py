"""Kinetix figures for papers: learning curves, and the held-out solve rate per level, best candidate against baseline.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in the
sandbox); it reads only the evaluator's `extra` of each final_info.json: "levels",
"per_level_solve_rate" [seeds][levels], "episodes_per_level", and "train_curves" ("steps" [points],
"solved" and "return" [seeds][points]: the harness's own training-episode statistics).
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

BEST = ("best candidate", RUN_COLOR, "o")
BASELINE = ("baseline agent", BASELINE_COLOR, "s")
RATE = (0.0, 1.0)  # solve rates, and so their intervals, live in [0, 1]


def _short(level: str) -> str:
    """A tick label: "s/h4_thrust_aim" -> "h4"."""
    return level.split("/")[-1].split("_", 1)[0]


def learning_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Training-episode solve rate against environment steps, mean and 95% band over seeds."""
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for extra, (label, color, _) in ((base, BASELINE), (best, BEST)):
            curves = extra["train_curves"]
            steps = np.asarray(curves["steps"], float)
            solved = per_seed(curves["solved"], steps.size, "extra.train_curves.solved")
            curve_with_band(ax, steps / 1e3, mean_ci95(solved, clip=RATE), color, label)
            ns.append(solved.shape[0])
        ax.set_xlabel("environment steps per seed (thousands)")
        ax.set_ylabel("solved training episodes")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left")
        path = save_figure(fig, out_dir / "learning_curves.pdf")
    caption = (
        "Learning curves: the fraction of training episodes (random variants of the training levels, played "
        "by the stochastic policy) whose last completed episode reached the goal, against environment steps "
        f"per seed; lines are the mean over {seeds_phrase(ns[1], ns[0])}, bands 95\\% t-intervals over seeds "
        "(clipped to $[0, 1]$). These are the harness's own training statistics; the metric is measured "
        "separately by the sealed evaluator with the greedy policy on held-out variants."
    )
    return Figure(path=path, caption=caption, label="fig:learning_curves")


def per_level_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Held-out solve rate per level: grouped bars with 95% intervals over seeds."""
    levels = base["levels"]
    if best["levels"] != levels:
        raise FigureError("the best candidate and the baseline were scored on different levels")
    runs = [(base, *BASELINE[:2]), (best, *BEST[:2])]
    path, ns = rate_bars(runs, "per_level_solve_rate", levels, [_short(name) for name in levels],
                         "level (kinetix/levels/" + levels[0].split("/")[0] + ")", "held-out solve rate",
                         out_dir / "solve_rate_per_level.pdf", clip=RATE)
    names = ", ".join(f"{_short(name)} = {texttt(name)}" for name in levels)
    caption = (
        f"Solve rate per level on held-out variants ({base['episodes_per_level']} per level, drawn by the sealed "
        f"evaluator from a private seed), greedy policy: mean over {seeds_phrase(ns[1], ns[0])}, error bars "
        f"95\\% t-intervals over seeds (clipped to $[0, 1]$). The metric {texttt('solve_rate')} is the mean of these "
        f"bars. Levels: {names}."
    )
    return Figure(path=path, caption=caption, label="fig:solve_rate_per_level")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """Learning curves and the held-out solve rate per level, best candidate against the baseline agent."""
    keys = ("levels", "per_level_solve_rate", "episodes_per_level", "train_curves")
    best = read_extra(best_final_info, "best candidate's", keys)
    base = read_extra(baseline_final_info, "baseline's", keys)
    out_dir = Path(out_dir)
    return [learning_curve_figure(best, base, out_dir), per_level_figure(best, base, out_dir)]

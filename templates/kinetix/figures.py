"""Kinetix figures for papers: learning curves, and the held-out solve rate per level, best candidate against baseline.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in the
sandbox); it reads only the evaluator's `extra` of each final_info.json: "levels",
"per_level_solve_rate" [seeds][levels], "episodes_per_level", and "train_curves" ("steps" [points],
"solved" and "return" [seeds][points]: the harness's own training-episode statistics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from base.stats import summarize
from papers.figures import Figure, FigureError, figure_style, new_figure, save_figure
from papers.tex import tex_escape

BEST = ("best candidate", "#0072B2", "o")
BASELINE = ("baseline agent", "#555555", "s")


def _extra(info: dict, who: str, keys: tuple[str, ...]) -> dict:
    extra = info.get("extra") or {}
    missing = [k for k in keys if k not in extra]
    if missing:
        raise FigureError(f"{who} final_info.json has no extra.{', extra.'.join(missing)}")
    return extra


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-interval over seeds (axis 0) per column, the interval clipped to [0, 1] where rates live.

    One seed gives no interval (the mean twice).
    """
    stats = [summarize(values[:, j]) for j in range(values.shape[1])]
    mean = np.array([s["mean"] for s in stats])
    lo, hi = np.array([s["ci95"] for s in stats]).T
    lo, hi = np.where(np.isfinite(lo), lo, mean), np.where(np.isfinite(hi), hi, mean)
    return mean, np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


def _short(level: str) -> str:
    """A tick label: "s/h4_thrust_aim" -> "h4"."""
    return level.split("/")[-1].split("_", 1)[0]


def _seeds(a: int, b: int) -> str:
    return f"{a} seeds" if a == b else f"{a} seeds (best candidate) and {b} seeds (baseline)"


def learning_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Training-episode solve rate against environment steps, mean and 95% band over seeds."""
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for extra, (label, color, _) in ((base, BASELINE), (best, BEST)):
            curves = extra["train_curves"]
            steps, solved = np.asarray(curves["steps"], float), np.asarray(curves["solved"], float)
            if solved.ndim != 2 or solved.shape[1] != steps.size:
                raise FigureError(f"extra.train_curves.solved has shape {solved.shape}, not [seeds][{steps.size}]")
            mean, lo, hi = _band(solved)
            ax.plot(steps / 1e3, mean, color=color, label=label)
            ax.fill_between(steps / 1e3, lo, hi, color=color, alpha=0.2, linewidth=0)
            ns.append(solved.shape[0])
        ax.set_xlabel("environment steps per seed (thousands)")
        ax.set_ylabel("solved training episodes")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="upper left")
        path = save_figure(fig, out_dir / "learning_curves.pdf")
    caption = (
        "Learning curves: the fraction of training episodes (random variants of the training levels, played "
        "by the stochastic policy) whose last completed episode reached the goal, against environment steps "
        f"per seed; lines are the mean over {_seeds(ns[1], ns[0])}, bands 95\\% t-intervals over seeds (clipped to "
        "$[0, 1]$). These are the harness's own training statistics; the metric is measured separately by the "
        "sealed evaluator with the greedy policy on held-out variants."
    )
    return Figure(path=path, caption=caption, label="fig:learning_curves")


def per_level_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Held-out solve rate per level: grouped bars with 95% intervals over seeds."""
    levels = base["levels"]
    if best["levels"] != levels:
        raise FigureError("the best candidate and the baseline were scored on different levels")
    width = 0.38
    x = np.arange(len(levels))
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for i, (extra, (label, color, _)) in enumerate(((base, BASELINE), (best, BEST))):
            rates = np.asarray(extra["per_level_solve_rate"], float)
            if rates.ndim != 2 or rates.shape[1] != len(levels):
                raise FigureError(f"extra.per_level_solve_rate has shape {rates.shape}, not [seeds][{len(levels)}]")
            mean, lo, hi = _band(rates)
            ax.bar(x + (i - 0.5) * width, mean, width, color=color, label=label,
                   yerr=np.stack([mean - lo, hi - mean]), error_kw={"elinewidth": 0.9, "capsize": 2})
            ns.append(rates.shape[0])
        ax.set_xticks(x, [_short(name) for name in levels])
        ax.set_xlabel("level (kinetix/levels/" + levels[0].split("/")[0] + ")")
        ax.set_ylabel("held-out solve rate")
        ax.set_ylim(0.0, 1.02)
        # Above the axes, so that it never covers a bar.
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=2, borderaxespad=0.0)
        path = save_figure(fig, out_dir / "solve_rate_per_level.pdf")
    names = ", ".join(f"{_short(name)} = \\texttt{{{tex_escape(name)}}}" for name in levels)
    caption = (
        f"Solve rate per level on held-out variants ({base['episodes_per_level']} per level, drawn by the sealed "
        f"evaluator from a private seed), greedy policy: mean over {_seeds(ns[1], ns[0])}, error bars 95\\% "
        f"t-intervals over seeds (clipped to $[0, 1]$). The metric \\texttt{{solve\\_rate}} is the mean of these "
        f"bars. Levels: {names}."
    )
    return Figure(path=path, caption=caption, label="fig:solve_rate_per_level")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """Learning curves and the held-out solve rate per level, best candidate against the baseline agent."""
    keys = ("levels", "per_level_solve_rate", "episodes_per_level", "train_curves")
    best = _extra(best_final_info, "best candidate's", keys)
    base = _extra(baseline_final_info, "baseline's", keys)
    out_dir = Path(out_dir)
    return [learning_curve_figure(best, base, out_dir), per_level_figure(best, base, out_dir)]

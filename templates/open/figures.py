"""OPEN figures for papers: training curves and final greedy returns of the best candidate against tuned Adam.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in
the sandbox); it reads only the evaluator's final_info.json: `extra.train_return`
[seeds][points] with `extra.curve_timesteps` (the harness's log of its training episodes,
informational) and `metrics.return` (the sealed greedy return per seed).
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
    read_extra,
    save_figure,
    seeds_phrase,
    tex_escape,
    texttt,
)

BEST = ("best candidate", RUN_COLOR, "o")
BASELINE = ("tuned Adam (baseline)", BASELINE_COLOR, "s")


def _curve(info: dict, who: str) -> dict:
    """Timesteps, and per point the mean and 95% t-interval over seeds of the training return."""
    extra = read_extra(info, who, ("train_return", "curve_timesteps"))
    x = np.asarray(extra["curve_timesteps"], dtype=float)
    y = per_seed(extra["train_return"], x.size, f"{who} extra.train_return", "points")
    return {"x": x, "band": mean_ci95(y), "env": extra.get("env", "")}


def learning_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Mean training return against environment steps, with 95% bands over seeds."""
    with figure_style():
        fig, ax = new_figure()
        for curve, (label, color, _) in ((base, BASELINE), (best, BEST)):
            curve_with_band(ax, curve["x"], curve["band"], color, label)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return")
        ax.legend(loc="upper left")
        path = save_figure(fig, out_dir / "learning_curves.pdf")
    seeds = seeds_phrase(best["band"].n, base["band"].n, "Adam")
    caption = (
        f"Training curves of PPO on {tex_escape(best['env'])} with the best candidate update rule and with tuned "
        "Adam: the return of the last finished training episode per environment, averaged over environments, at "
        f"each PPO update; lines are means over {seeds} and bands 95\\% t-intervals over seeds. These are the "
        "harness's own training logs (stochastic policy) and are informational; the metric is the greedy "
        "return measured afterwards by the sealed evaluator."
    )
    return Figure(path=path, caption=caption, label="fig:learning_curves")


def _finals(info: dict, who: str) -> np.ndarray:
    try:
        return np.asarray(info["metrics"]["return"]["values"], dtype=float)
    except (KeyError, TypeError):
        raise FigureError(f"{who} final_info.json has no metrics.return.values") from None


def final_return_figure(best_info: dict, base_info: dict, out_dir: Path) -> Figure:
    """Per-seed sealed greedy returns of both, with means and 95% intervals."""
    best, base = _finals(best_info, "best candidate's"), _finals(base_info, "baseline's")
    with figure_style():
        fig, ax = new_figure()
        rng = np.random.default_rng(0)  # fixed jitter: the figure is reproducible
        for i, (values, (label, color, marker)) in enumerate(((base, BASELINE), (best, BEST))):
            ax.scatter(i + rng.uniform(-0.08, 0.08, values.size), values, color=color, marker=marker, alpha=0.6,
                       label=f"{label}, per seed")
            band = mean_ci95(values[:, None])
            ax.errorbar([i + 0.25], band.mean, yerr=band.err, color=color, marker="D", capsize=3)
        ax.set_xticks([0, 1], ["tuned Adam", "best candidate"])
        ax.set_xlim(-0.5, 1.6)
        ax.set_ylabel("greedy evaluation return")
        path = save_figure(fig, out_dir / "final_returns.pdf")
    caption = (
        "Sealed evaluation: mean greedy return over the evaluator's episodes for each training seed (points), "
        "and their mean with a 95\\% t-interval over seeds (diamonds), for tuned Adam and the best candidate. "
        f"The metric {texttt('normalized_return')} is this return divided by tuned Adam's reference return."
    )
    return Figure(path=path, caption=caption, label="fig:final_returns")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """Learning curves and per-seed final returns, best candidate against tuned Adam."""
    out_dir = Path(out_dir)
    best, base = _curve(best_final_info, "best candidate's"), _curve(baseline_final_info, "baseline's")
    return [learning_curve_figure(best, base, out_dir), final_return_figure(best_final_info, baseline_final_info,
                                                                            out_dir)]

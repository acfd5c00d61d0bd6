"""OPEN figures for papers: training curves and final greedy returns of the best candidate against tuned Adam.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in
the sandbox); it reads only the evaluator's final_info.json: `extra.train_return`
[seeds][points] with `extra.curve_timesteps` (the harness's log of its training episodes,
informational) and `metrics.return` (the sealed greedy return per seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats as st

from papers.figures import Figure, FigureError, figure_style, new_figure, save_figure

BEST = ("best candidate", "#0072B2", "o")
BASELINE = ("tuned Adam (baseline)", "#555555", "s")


def _half_width(y: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean over axis 0; zero for a single seed (no interval)."""
    n = y.shape[0]
    if n < 2:
        return np.zeros(y.shape[1:])
    return st.t.ppf(0.975, n - 1) * y.std(0, ddof=1) / np.sqrt(n)


def _curve(info: dict, who: str) -> dict:
    """Timesteps, and per point the mean and 95% t-interval over seeds of the training return."""
    extra = info.get("extra") or {}
    missing = [k for k in ("train_return", "curve_timesteps") if k not in extra]
    if missing:
        raise FigureError(f"{who} final_info.json has no extra.{', extra.'.join(missing)}")
    x = np.asarray(extra["curve_timesteps"], dtype=float)
    y = np.asarray(extra["train_return"], dtype=float)
    if y.ndim != 2 or y.shape[1] != x.size:
        raise FigureError(f"{who} extra.train_return {y.shape} is not [seeds][{x.size} points]")
    mean, half = y.mean(0), _half_width(y)
    return {"x": x, "mean": mean, "lo": mean - half, "hi": mean + half, "n": y.shape[0], "env": extra.get("env", "")}


def _seeds(best: dict, base: dict) -> str:
    if best["n"] == base["n"]:
        return f"{best['n']} seeds"
    return f"{best['n']} seeds (best candidate) and {base['n']} seeds (Adam)"


def learning_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Mean training return against environment steps, with 95% bands over seeds."""
    with figure_style():
        fig, ax = new_figure()
        for curve, (label, color, _) in ((base, BASELINE), (best, BEST)):
            ax.plot(curve["x"], curve["mean"], color=color, label=label)
            ax.fill_between(curve["x"], curve["lo"], curve["hi"], color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("training episode return")
        ax.legend(loc="upper left")
        path = save_figure(fig, out_dir / "learning_curves.pdf")
    env = best["env"].replace("_", "\\_")
    caption = (
        f"Training curves of PPO on {env} with the best candidate update rule and with tuned Adam: the return "
        "of the last finished training episode per environment, averaged over environments, at each PPO update; "
        f"lines are means over {_seeds(best, base)} and bands 95\\% t-intervals over seeds. These are the "
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
            mean, half = values.mean(), float(_half_width(values[:, None])[0])
            ax.errorbar([i + 0.25], [mean], yerr=[[half], [half]], color=color, marker="D", capsize=3)
        ax.set_xticks([0, 1], ["tuned Adam", "best candidate"])
        ax.set_xlim(-0.5, 1.6)
        ax.set_ylabel("greedy evaluation return")
        path = save_figure(fig, out_dir / "final_returns.pdf")
    caption = (
        "Sealed evaluation: mean greedy return over the evaluator's episodes for each training seed (points), "
        "and their mean with a 95\\% t-interval over seeds (diamonds), for tuned Adam and the best candidate. "
        "The metric \\texttt{normalized\\_return} is this return divided by tuned Adam's reference return."
    )
    return Figure(path=path, caption=caption, label="fig:final_returns")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """Learning curves and per-seed final returns, best candidate against tuned Adam."""
    out_dir = Path(out_dir)
    best, base = _curve(best_final_info, "best candidate's"), _curve(baseline_final_info, "baseline's")
    return [learning_curve_figure(best, base, out_dir), final_return_figure(best_final_info, baseline_final_info,
                                                                            out_dir)]

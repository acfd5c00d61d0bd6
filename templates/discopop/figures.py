"""DiscoPOP figures for papers: the reward-KL frontier of the best candidate against DPO.

Loaded by path by `papers.figures.template_figures` in the framework's process
(never in the sandbox); it reads only the evaluator's `extra` of each
final_info.json: "betas", "kl" [seeds][betas], "reward_gain" [seeds][betas] and
"kl_budget".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from papers.figures import (
    BASELINE_COLOR,
    RUN_COLOR,
    Figure,
    FigureError,
    figure_style,
    legend_above,
    mean_ci95,
    new_figure,
    read_extra,
    save_figure,
    seeds_phrase,
    texttt,
)

BEST = ("best candidate", RUN_COLOR, "o")
BASELINE = ("DPO (baseline)", BASELINE_COLOR, "s")


def _sweep(info: dict, who: str) -> dict:
    """Betas, and per beta the mean and 95% t-interval over seeds of KL and reward gain."""
    extra = read_extra(info, who, ("betas", "kl", "reward_gain", "kl_budget"))
    betas = np.asarray(extra["betas"], dtype=float)
    kl, gain = np.asarray(extra["kl"], dtype=float), np.asarray(extra["reward_gain"], dtype=float)
    if kl.ndim != 2 or kl.shape != gain.shape or kl.shape[1] != betas.size:
        raise FigureError(f"{who} extra.kl {kl.shape} and extra.reward_gain {gain.shape} are not "
                          f"[seeds][{betas.size} betas]")
    order = np.argsort(betas)  # points are joined in beta order
    out = {"betas": betas[order], "n": kl.shape[0], "budget": float(extra["kl_budget"])}
    for key, values in (("kl", kl), ("gain", gain)):
        band = mean_ci95(values[:, order])
        out[key], out[key + "_err"] = band.mean, band.err
    return out


def _legend_sweeps_first(ax: Axes, ncol: int) -> None:
    """The legend above the axes, so that it never covers data, with the two sweeps first."""
    handles, labels = ax.get_legend_handles_labels()
    first = [labels.index(name) for name in (BEST[0], BASELINE[0])]
    order = first + [i for i in range(len(labels)) if i not in first]
    legend_above(ax, ncol, [handles[i] for i in order], [labels[i] for i in order])


def _seeds(best: dict, base: dict) -> str:
    return seeds_phrase(best["n"], base["n"], "DPO")


def frontier_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Mean KL (x) against mean reward gain (y) per beta, with 95% intervals both ways."""
    with figure_style():
        fig, ax = new_figure()
        for sweep, (label, color, marker) in ((base, BASELINE), (best, BEST)):
            ax.errorbar(sweep["kl"], sweep["gain"], xerr=sweep["kl_err"], yerr=sweep["gain_err"], color=color,
                        marker=marker, linestyle="-", elinewidth=0.9, alpha=0.95, label=label)
        ax.plot([0.0], [0.0], marker="*", markersize=11, color="black", linestyle="none",
                label="reference policy", zorder=4)
        ax.axvline(best["budget"], color="#D55E00", linestyle="--", linewidth=1.1,
                   label=f"KL budget ({best['budget']:g})")
        ax.set_xlabel("KL(policy || reference), nats (mean over seeds)")
        ax.set_ylabel("reward gain over reference")
        ax.set_xlim(left=min(0.0, ax.get_xlim()[0]))
        _legend_sweeps_first(ax, ncol=2)
        path = save_figure(fig, out_dir / "reward_kl_frontier.pdf")
    caption = (
        "Reward--KL frontier of the best candidate and of the DPO baseline. Each point is one $\\beta$ of the "
        "sweep: the KL divergence of the trained policy to the reference policy (x) and its expected true-reward "
        "gain over the reference on held-out prompts (y), each the mean over "
        f"{_seeds(best, base)}; error bars in both directions are 95\\% t-intervals over seeds, and points are "
        "joined in $\\beta$ order. The star is the reference policy at $(0, 0)$ and the dashed line the KL "
        f"budget, {best['budget']:g} nat{'' if best['budget'] == 1 else 's'}. The metric "
        f"{texttt('reward_gain_at_kl')} is the reward gain reachable within this budget by each seed's trained "
        "policies and their mixtures (the upper concave hull of their exact points, the reference at $(0, 0)$ "
        "included), averaged over seeds."
    )
    return Figure(path=path, caption=caption, label="fig:reward_kl_frontier")


def gain_per_beta_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Mean reward gain per beta (log-scaled x), with 95% intervals over seeds."""
    with figure_style():
        fig, ax = new_figure()
        for sweep, (label, color, marker) in ((base, BASELINE), (best, BEST)):
            ax.errorbar(sweep["betas"], sweep["gain"], yerr=sweep["gain_err"], color=color, marker=marker,
                        linestyle="-", elinewidth=0.9, alpha=0.95, label=label)
        ax.axhline(0.0, color="black", linewidth=0.8, label="reference policy")
        ax.set_xscale("log")
        ax.set_xlabel("β (log scale)")
        ax.set_ylabel("reward gain over reference")
        _legend_sweeps_first(ax, ncol=3)
        path = save_figure(fig, out_dir / "reward_gain_per_beta.pdf")
    caption = (
        "Expected true-reward gain over the reference policy on held-out prompts for each $\\beta$ of the sweep, "
        f"for the best candidate and the DPO baseline: mean over {_seeds(best, base)}, error bars are 95\\% "
        "t-intervals over seeds. Only gains reached within the KL budget count towards "
        f"{texttt('reward_gain_at_kl')} (see the frontier figure)."
    )
    return Figure(path=path, caption=caption, label="fig:reward_gain_per_beta")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """The reward-KL frontier and the reward gain per beta, best candidate against DPO."""
    best, base = _sweep(best_final_info, "best candidate's"), _sweep(baseline_final_info, "baseline's")
    out_dir = Path(out_dir)
    return [frontier_figure(best, base, out_dir), gain_per_beta_figure(best, base, out_dir)]

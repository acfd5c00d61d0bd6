"""Synthenv figures for papers: the meta-training curve and the real return per inner algorithm, best against baseline.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in the sandbox); it reads only
the evaluator's `extra` of each final_info.json: "meta_curves" ("fitness_mean" [seeds][generations], the
harness's own report of its population's real return per generation), "per_agent_return" ({"ppo", "reinforce"}:
[seeds][agents], the evaluator's measurement), "env" and "agents_per_algorithm".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from papers.figures import (
    BASELINE_COLOR,
    RUN_COLOR,
    Figure,
    FigureError,
    bars_with_ci,
    curve_with_band,
    figure_style,
    legend_above,
    mean_ci95,
    new_figure,
    per_seed,
    read_extra,
    save_figure,
    seeds_phrase,
    texttt,
)

BEST = ("best candidate", RUN_COLOR)
BASELINE = ("baseline bandit", BASELINE_COLOR)
ALGORITHMS = {"ppo": "PPO", "reinforce": "REINFORCE (held out)"}


def meta_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """The population's mean real return per generation of meta-training, mean and 95% band over seeds."""
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for extra, (label, color) in ((base, BASELINE), (best, BEST)):
            curve = np.asarray(extra["meta_curves"]["fitness_mean"], float)
            if curve.ndim != 2:
                raise FigureError("extra.meta_curves.fitness_mean must be [seeds][generations]")
            curve_with_band(ax, np.arange(1, curve.shape[1] + 1), mean_ci95(curve), color, label)
            ns.append(curve.shape[0])
        ax.set_xlabel("generation of meta-training")
        ax.set_ylabel(f"population's mean return ({base['env']})")
        legend_above(ax, ncol=2)
        path = save_figure(fig, out_dir / "meta_training.pdf")
    caption = (
        "Meta-training: the mean real return, per generation, of the agents trained on the population's bandits "
        f"(one agent each, at hyperparameters the candidate samples), played greedily on {texttt(base['env'])} "
        f"for the candidate's horizon; mean over {seeds_phrase(ns[1], ns[0])}, bands 95\\% t-intervals over seeds. "
        "These are the harness's own fitness values; the metric is measured separately by the sealed evaluator."
    )
    return Figure(path=path, caption=caption, label="fig:meta_training")


def per_algorithm_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """The evaluator's real return per inner algorithm: grouped bars with 95% intervals over seeds."""
    x = np.arange(len(ALGORITHMS))
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for i, (extra, (label, color)) in enumerate(((base, BASELINE), (best, BEST))):
            cols = []
            for algorithm in ALGORITHMS:
                agents = np.asarray(extra["per_agent_return"][algorithm], float)
                cols.append(per_seed(agents, extra["agents_per_algorithm"], f"extra.per_agent_return.{algorithm}",
                                     " agents").mean(-1))
            values = np.stack(cols, -1)
            bars_with_ci(ax, x, mean_ci95(values), color, label, slot=i, slots=2, width=0.38,
                         error_kw={"elinewidth": 0.9, "capsize": 2})
            ns.append(values.shape[0])
        ax.set_xticks(x, list(ALGORITHMS.values()))
        ax.set_xlabel("algorithm the evaluator trains on the bandit")
        ax.set_ylabel(f"greedy return on {base['env']}")
        legend_above(ax, ncol=2)
        path = save_figure(fig, out_dir / "return_per_algorithm.pdf")
    caption = (
        f"Real return of agents the sealed evaluator trains on each seed's final bandit, per algorithm "
        f"({base['agents_per_algorithm']} agents each, at hyperparameters drawn from a private seed; REINFORCE is "
        f"never used in meta-training), greedy policies on {texttt(base['env'])}: mean over "
        f"{seeds_phrase(ns[1], ns[0])}, error bars 95\\% t-intervals over seeds. The metric {texttt('return')} is "
        "the mean of the two bars."
    )
    return Figure(path=path, caption=caption, label="fig:return_per_algorithm")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """The meta-training curve and the evaluator's return per algorithm, best candidate against the baseline."""
    keys = ("env", "meta_curves", "per_agent_return", "agents_per_algorithm")
    best = read_extra(best_final_info, "best candidate's", keys)
    base = read_extra(baseline_final_info, "baseline's", keys)
    out_dir = Path(out_dir)
    return [meta_curve_figure(best, base, out_dir), per_algorithm_figure(best, base, out_dir)]

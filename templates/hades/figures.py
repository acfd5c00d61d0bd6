"""HaDES figures for papers: the ES's fitness curves, the held-out return per architecture, the distilled states.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in the sandbox); it reads only
the evaluator's `extra` of each final_info.json: "es_curves" ("fitness_mean", "fitness_max" [seeds][generations]:
the harness's own report of its ES), "architectures" and "per_architecture_return" [seeds][architectures] (the
evaluator's policies), "ppo_reference_return", and "states" [D][600] with "labels" [D][4] (the first seed's data set,
in observation units).
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
    tex_escape,
    texttt,
)

BEST = ("best candidate", RUN_COLOR)
BASELINE = ("baseline (HaDES-R)", BASELINE_COLOR)
CHANNELS = ("cannon", "alien", "alien left", "alien right", "friendly bullet", "enemy bullet")  # MinAtar's 6
ACTIONS = ("no-op", "left", "right", "fire")  # SpaceInvaders-MinAtar's minimal action set


def fitness_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """The ES's mean population fitness against generations, mean and 95% band over seeds."""
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for extra, (label, color) in ((base, BASELINE), (best, BEST)):
            mean = np.asarray(extra["es_curves"]["fitness_mean"], float)
            if mean.ndim != 2:
                raise FigureError("extra.es_curves.fitness_mean must be [seeds][generations]")
            curve_with_band(ax, np.arange(1, mean.shape[1] + 1), mean_ci95(mean), color, label)
            ns.append(mean.shape[0])
        ax.set_xlabel("ES generation")
        ax.set_ylabel("mean fitness (training return)")
        ax.legend(loc="upper left")
        path = save_figure(fig, out_dir / "es_fitness.pdf")
    caption = (
        "The evolution strategy's mean fitness over its population against generations: the return of the last "
        "episode that each training environment finished (its running return if none) with a policy "
        "behaviour-cloned on the candidate data set "
        f"(the harness's own report). Lines are the mean over {seeds_phrase(ns[1], ns[0])}, bands 95\\% "
        "t-intervals over seeds. The metric is measured separately by the sealed evaluator, with its own policies "
        "and episodes."
    )
    return Figure(path=path, caption=caption, label="fig:es_fitness")


def architecture_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Held-out return per architecture, normalised by the PPO reference: grouped bars with 95% intervals."""
    archs = base["architectures"]
    if best["architectures"] != archs:
        raise FigureError("the best candidate and the baseline were scored on different architectures")
    x, ns = np.arange(len(archs)), []
    with figure_style():
        fig, ax = new_figure()
        for i, (extra, (label, color)) in enumerate(((base, BASELINE), (best, BEST))):
            values = per_seed(extra["per_architecture_return"], len(archs), "extra.per_architecture_return")
            bars_with_ci(ax, x, mean_ci95(values / float(extra["ppo_reference_return"])), color, label, slot=i,
                         slots=2, width=0.38, error_kw={"elinewidth": 0.9, "capsize": 2})
            ns.append(values.shape[0])
        ax.set_xticks(x, [a.replace(" ", "\n") for a in archs])
        ax.set_xlabel("held-out architecture (2 hidden layers: width, activation)")
        ax.set_ylabel("return / PPO reference")
        legend_above(ax, ncol=2)
        path = save_figure(fig, out_dir / "return_per_architecture.pdf")
    caption = (
        "Return of fresh policies behaviour-cloned by the sealed evaluator on each seed's distilled data set, per "
        "held-out architecture (widths and activations the evolution strategy never trained), divided by the PPO "
        f"reference's return: mean over {seeds_phrase(ns[1], ns[0])}, error bars 95\\% t-intervals over seeds. The "
        f"metric {texttt('normalized_return')} is the mean of these bars. Architectures: "
        f"{tex_escape(', '.join(archs))}."
    )
    return Figure(path=path, caption=caption, label="fig:return_per_architecture")


def states_figure(best: dict, out_dir: Path) -> Figure:
    """The best candidate's distilled states (first seed): one 10 x 10 image per state, grouped by its label."""
    states = np.asarray(best["states"], float)
    labels = np.asarray(best["labels"], float)
    if states.ndim != 2 or states.shape[1] != 600 or labels.shape != (states.shape[0], 4):
        raise FigureError("extra.states must be [D][600] and extra.labels [D][4]")
    grids = states.reshape(-1, 10, 10, 6)
    order = np.argsort(labels.argmax(-1), kind="stable")
    d = states.shape[0]
    cols = min(d, 8)
    rows = -(-d // cols)
    with figure_style():
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(rows, cols, figsize=(1.0 * cols, 1.15 * rows), squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= d:
                ax.axis("off")
                continue
            i = order[k]
            # Each cell coloured by its strongest channel (observation units; MinAtar's own are 0 or 1).
            strongest = grids[i].argmax(-1).astype(float)
            strongest[grids[i].max(-1) < 0.5] = np.nan
            ax.imshow(strongest, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
            top = labels[i].argmax()
            ax.set_title(f"{ACTIONS[top]} {labels[i, top]:.2f}", fontsize=6)
        path = save_figure(fig, out_dir / "distilled_states.pdf")
    caption = (
        f"The best candidate's distilled data set (first seed, {d} states), each state a 10 $\\times$ 10 grid of "
        "SpaceInvaders-MinAtar, a cell coloured by its strongest channel ("
        + ", ".join(f"{i}: {name}" for i, name in enumerate(CHANNELS))
        + " in the tab10 colour cycle) where that channel exceeds 0.5 in observation units, blank otherwise; titles "
        "give each state's most likely action label and its probability."
    )
    return Figure(path=path, caption=caption, label="fig:distilled_states")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """ES fitness curves, held-out return per architecture (best against baseline), the best's distilled states."""
    keys = ("es_curves", "architectures", "per_architecture_return", "ppo_reference_return", "states", "labels")
    best = read_extra(best_final_info, "best candidate's", keys)
    base = read_extra(baseline_final_info, "baseline's", keys)
    out_dir = Path(out_dir)
    return [fitness_figure(best, base, out_dir), architecture_figure(best, base, out_dir),
            states_figure(best, out_dir)]

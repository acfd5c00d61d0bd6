"""Diffusion figures for papers: samples against held-out data per data set, and MMD per data set.

Loaded by path by `papers.figures.template_figures` in the framework's process
(never in the sandbox); it reads only the evaluator's `extra` of each
final_info.json: "datasets", "figure_heldout" and "figure_samples" [data sets][points][2]
(seed 0), and "per_dataset" {"mmd": [seeds][data sets], "mmd_noise": ...}.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from papers.figures import (
    BASELINE_COLOR,
    FIGSIZE,
    RUN_COLOR,
    Figure,
    FigureError,
    bars_with_ci,
    figure_style,
    legend_above,
    mean_ci95,
    read_extra,
    save_figure,
    seeds_phrase,
)

BEST = ("best candidate", RUN_COLOR)
BASELINE = ("DDPM (baseline)", BASELINE_COLOR)
DATA_COLOR = "#D55E00"
LIMIT = 2.6  # every data set lies inside [-2.2, 2.2]^2


def _read(info: dict, who: str) -> dict:
    """Data set names, seed-0 points and per-seed MMD of one final_info.json, checked."""
    extra = read_extra(info, who, ("datasets", "figure_heldout", "figure_samples", "per_dataset"))
    names = list(extra["datasets"])
    samples, heldout = np.asarray(extra["figure_samples"], float), np.asarray(extra["figure_heldout"], float)
    mmd = np.asarray(extra["per_dataset"].get("mmd", []), float)
    noise = np.asarray(extra["per_dataset"].get("mmd_noise", []), float)
    d = len(names)
    if samples.ndim != 3 or samples.shape[0] != d or samples.shape[2] != 2 or heldout.shape[0] != d:
        raise FigureError(f"{who} extra.figure_samples {samples.shape} is not [{d} data sets][points][2]")
    if mmd.ndim != 2 or mmd.shape[1] != d or noise.shape != mmd.shape:
        raise FigureError(f"{who} extra.per_dataset.mmd {mmd.shape} is not [seeds][{d} data sets]")
    return {"names": names, "samples": samples, "heldout": heldout, "mmd": mmd, "noise": noise}


def samples_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """A grid: rows held-out data, baseline samples, best samples; one column per data set."""
    names = best["names"]
    rows = (("held-out data", best["heldout"], DATA_COLOR), (BASELINE[0], base["samples"], BASELINE[1]),
            (BEST[0], best["samples"], BEST[1]))
    with figure_style():
        fig, axes = plt.subplots(len(rows), len(names), figsize=(5.0, 4.0), squeeze=False)
        for r, (label, points, color) in enumerate(rows):
            for d, name in enumerate(names):
                ax = axes[r, d]
                ax.scatter(points[d, :, 0], points[d, :, 1], s=0.6, color=color, linewidths=0, rasterized=False)
                ax.set_xlim(-LIMIT, LIMIT)
                ax.set_ylim(-LIMIT, LIMIT)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():  # a light frame on all four sides: a square window on the plane
                    spine.set_visible(True)
                    spine.set_linewidth(0.5)
                    spine.set_color("#999999")
                if r == 0:
                    ax.set_title(name)
                if d == 0:
                    ax.set_ylabel(label, fontsize=7)
        fig.subplots_adjust(wspace=0.05, hspace=0.08)
        path = save_figure(fig, out_dir / "samples.pdf")
    n = best["samples"].shape[1]
    caption = (
        f"Samples against data, one column per data set: {n} held-out points that training never saw (top), "
        f"and {n} samples of the DDPM baseline (middle) and of the best candidate (bottom), each from the model "
        "of seed 0, drawn by the sealed evaluator with its own noise through the exported denoiser and "
        "sampler table."
    )
    return Figure(path=path, caption=caption, label="fig:samples")


def mmd_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """MMD per data set (bars: mean over seeds, 95% t-intervals), best against baseline, with noise's MMD."""
    names = best["names"]
    x = np.arange(len(names))
    with figure_style():
        fig, ax = plt.subplots(figsize=FIGSIZE)
        for i, (run, (label, color)) in enumerate(((base, BASELINE), (best, BEST))):
            bars_with_ci(ax, x, mean_ci95(run["mmd"]), color, label, slot=i, slots=2, width=0.38)
        noise = best["noise"].mean(0)
        ax.scatter(x, noise, marker="_", s=300, color="black", zorder=3, label="Gaussian noise")
        ax.set_xticks(x)
        ax.set_xticklabels(names)
        ax.grid(axis="x", visible=False)
        ax.set_ylabel("MMD to held-out data (lower is better)")
        legend_above(ax, ncol=3)
        path = save_figure(fig, out_dir / "mmd_per_dataset.pdf")
    seeds = seeds_phrase(best["mmd"].shape[0], base["mmd"].shape[0])
    caption = (
        "MMD between samples and held-out points per data set, for the DDPM baseline and the best candidate: "
        f"mean over {seeds}, error bars are 95\\% t-intervals over seeds. Samples judged to copy training "
        "points count as Gaussian noise; the black marks are the MMD of standard Gaussian noise itself, the value "
        "of a model that learned nothing."
    )
    return Figure(path=path, caption=caption, label="fig:mmd_per_dataset")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """Samples against data per data set, and the MMD per data set, best candidate against DDPM."""
    best, base = _read(best_final_info, "best candidate's"), _read(baseline_final_info, "baseline's")
    if best["names"] != base["names"]:
        raise FigureError(f"the runs scored different data sets: {best['names']} and {base['names']}")
    out_dir = Path(out_dir)
    return [samples_figure(best, base, out_dir), mmd_figure(best, base, out_dir)]

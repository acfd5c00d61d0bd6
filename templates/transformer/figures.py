"""Transformer figures for papers: held-out learning curves and per-seed results, best candidate against baseline.

Loaded by path by `papers.figures.template_figures` in the framework's process (never in
the sandbox); it reads only what the evaluator wrote into each final_info.json:
`extra.checkpoint_steps`, `extra.val_bpc_curve` [seeds][checkpoints] and
`metrics.val_bpc.values`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from papers.figures import (
    BASELINE_COLOR,
    RUN_COLOR,
    Figure,
    figure_style,
    mean_ci95,
    new_figure,
    per_seed,
    read_extra,
    save_figure,
    seeds_phrase,
    texttt,
)

BEST = ("best candidate", RUN_COLOR, "o")
BASELINE = ("baseline", BASELINE_COLOR, "s")


def _curve(info: dict, who: str) -> dict:
    """Checkpoint steps, and per checkpoint the mean and 95% t-interval over seeds of held-out bits per character."""
    extra = read_extra(info, who, ("checkpoint_steps", "val_bpc_curve"))
    steps = np.asarray(extra["checkpoint_steps"], dtype=float)
    curve = per_seed(extra["val_bpc_curve"], steps.size, f"{who} extra.val_bpc_curve", "checkpoints")
    band = mean_ci95(curve)
    return {"steps": steps, "mean": band.mean, "err": band.err, "final": curve[:, -1], "n": band.n,
            "uniform": extra.get("uniform_bpc")}


def _seeds(best: dict, base: dict) -> str:
    return seeds_phrase(best["n"], base["n"])


def learning_curve_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """Held-out bits per character at each checkpoint, mean with 95% intervals over seeds."""
    with figure_style():
        fig, ax = new_figure()
        for c, (label, color, marker) in ((base, BASELINE), (best, BEST)):
            ax.errorbar(c["steps"], c["mean"], yerr=c["err"], color=color, marker=marker, label=label,
                        elinewidth=0.9)
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out bits per character")
        ax.legend()
        path = save_figure(fig, out_dir / "val_bpc_curve.pdf")
    caption = ("Held-out cross-entropy (bits per character, lower is better) of the best candidate and of the "
               "baseline at evenly spaced checkpoints of training, measured by the sealed evaluator on held-out "
               f"fortunes: mean over {_seeds(best, base)}, error bars are 95\\% t-intervals over seeds. The last "
               f"checkpoint is the metric {texttt('val_bpc')}.")
    return Figure(path=path, caption=caption, label="fig:val_bpc_curve")


def per_seed_figure(best: dict, base: dict, out_dir: Path) -> Figure:
    """The final held-out bits per character of every seed, with each run's mean."""
    with figure_style():
        fig, ax = new_figure()
        for x, (c, (label, color, marker)) in enumerate(((base, BASELINE), (best, BEST))):
            jitter = np.linspace(-0.12, 0.12, c["final"].size) if c["final"].size > 1 else np.zeros(1)
            ax.scatter(x + jitter, c["final"], color=color, marker=marker, label=label, zorder=3)
            ax.hlines(c["final"].mean(), x - 0.25, x + 0.25, color=color, linewidth=1.6)
        ax.set_xticks([0, 1], [BASELINE[0], BEST[0]])
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylabel("held-out bits per character")
        path = save_figure(fig, out_dir / "val_bpc_per_seed.pdf")
    caption = ("Final held-out bits per character of every seed (points) and their mean (line), for the baseline "
               f"and the best candidate ({_seeds(best, base)}). Seeds differ in initialisation and in the order of "
               "the training windows; all are scored on the same held-out text.")
    return Figure(path=path, caption=caption, label="fig:val_bpc_per_seed")


def figures(best_final_info: dict, baseline_final_info: dict, out_dir: Path) -> list[Figure]:
    """The held-out learning curve and the per-seed results, best candidate against the baseline."""
    best, base = _curve(best_final_info, "best candidate's"), _curve(baseline_final_info, "baseline's")
    out_dir = Path(out_dir)
    return [learning_curve_figure(best, base, out_dir), per_seed_figure(best, base, out_dir)]

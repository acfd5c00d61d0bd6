"""Figures for papers, made only from logged results (final_info.json and run summaries).

Every figure is a vector PDF for LaTeX, sized for one column, with a LaTeX-safe
caption that says what is shown and that error bars are 95% t-intervals over
seeds. The framework draws the metric of every run against the baseline; a
template may add figures of its own in `<template>/figures.py` (see
`template_figures`), made with the helpers here: the style and size
(`figure_style`, `new_figure`, `save_figure`, `legend_above`), the evaluator's
`extra` read with one-line errors (`read_extra`, `per_seed`), the mean and 95%
interval over seeds per x (`mean_ci95`) and how to draw it (`curve_with_band`,
`bars_with_ci`), "n seeds" for captions (`seeds_phrase`) and LaTeX escaping
(`tex_escape`, `texttt`, from papers.tex).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from numpy.typing import ArrayLike

matplotlib.use("Agg")  # no display here; must precede the pyplot import

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from base.stats import summarize  # noqa: E402
from papers.tex import tex_escape, texttt  # noqa: E402

__all__ = [  # the framework's figures, and what a template's figures.py may use
    "BASELINE_COLOR", "FAILED_COLOR", "FIGSIZE", "RUN_COLOR", "STYLE", "Band", "Figure", "FigureError",
    "bars_with_ci", "curve_with_band", "figure_style", "legend_above", "mean_ci95", "metric_per_run", "n_seeds",
    "new_figure", "per_seed", "plain_text", "read_extra", "save_figure", "seeds_phrase", "template_figures",
    "tex_escape", "texttt",
]

# One column of a two-column paper is about 3.3 in wide; LaTeX scales the PDF to
# \linewidth, so 5 x 3.2 in with 9 pt text stays legible at either width.
FIGSIZE = (5.0, 3.2)

# A plain, readable style, fixed here so that the user's matplotlibrc cannot change the figures.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "lines.linewidth": 1.4,
    "lines.markersize": 5,
    "errorbar.capsize": 2.5,
    "pdf.fonttype": 42,           # embed TrueType fonts: selectable text, accepted by publishers
    "text.usetex": False,
    "svg.hashsalt": "scientist",  # deterministic ids should anyone save SVG too
}

# Colours of the framework's figures (colour-blind safe: Okabe-Ito).
RUN_COLOR = "#0072B2"
BASELINE_COLOR = "#555555"
FAILED_COLOR = "#D55E00"


class FigureError(Exception):
    """A figure could not be made; the message is a one-line reason."""


@dataclass(frozen=True)
class Figure:
    """A figure written for the paper."""

    path: Path     # a PDF file (vector, for LaTeX)
    caption: str   # LaTeX-safe caption
    label: str     # LaTeX label, e.g. "fig:metric_per_run"


@contextmanager
def figure_style() -> Iterator[None]:
    """Apply the papers' figure style for the duration of a with-block (templates may use it too)."""
    with plt.rc_context(STYLE):
        yield


def new_figure() -> tuple[MplFigure, Axes]:
    """A one-column figure with one axes, in the papers' size (call inside `figure_style`)."""
    return plt.subplots(figsize=FIGSIZE)


def save_figure(fig: MplFigure, path: Path) -> Path:
    """Save fig as a reproducible PDF at path and close it; returns path.

    Closing matters: pyplot keeps every figure alive until closed, and one
    process may write many papers.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # No CreationDate, so that re-running gives byte-identical PDFs.
        fig.savefig(path, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    finally:
        plt.close(fig)
    return path


def plain_text(text: object) -> str:
    """Text that matplotlib draws literally: a '$' would otherwise start mathtext."""
    return str(text).replace("$", r"\$")


def legend_above(ax: Axes, ncol: int, handles: list | None = None, labels: list[str] | None = None,
                 **kwargs: object) -> None:
    """The legend in rows above the axes, so that it never covers data (handles and labels: their order)."""
    args = () if handles is None else (handles, labels)
    ax.legend(*args, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=ncol, borderaxespad=0.0, **kwargs)


# ---------------------------------------------------------------- what a template's figures.py reads and draws


def point_axes(ax: Axes, labels: list[str], metric: str, direction: str, max_chars: int) -> None:
    """Axes for one point per run or idea at x = 1..n: labels tilted when crowded, the metric's direction on y."""
    if labels:
        crowded = len(labels) > 6 or max(len(s) for s in labels) > max_chars
        ax.set_xticks(list(range(1, len(labels) + 1)))
        ax.set_xticklabels(labels, rotation=30 if crowded else 0, ha="right" if crowded else "center")
        ax.set_xlim(0.4, len(labels) + 0.6)
    else:
        ax.set_xticks([])
    ax.grid(axis="x", visible=False)
    ax.set_ylabel(f"{plain_text(metric)} ({'higher' if direction == 'max' else 'lower'} is better)")


def read_extra(info: dict, who: str, keys: Sequence[str]) -> dict:
    """The evaluator's `extra` of a final_info.json, or a FigureError naming every one of `keys` it lacks.

    who: whose final_info this is, for the message ("best candidate's", "baseline's").
    """
    extra = info.get("extra") or {}
    missing = [k for k in keys if k not in extra]
    if missing:
        raise FigureError(f"{who} final_info.json has no extra.{', extra.'.join(missing)}")
    return extra


def per_seed(values: ArrayLike, n: int, what: str, unit: str = "") -> np.ndarray:
    """values as floats [seeds][n], or a FigureError: "<what> has shape (...), not [seeds][<n> <unit>]".

    what: whose array it is, for the message ("best candidate's extra.val_bpc_curve"); unit: what n counts.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != n:
        raise FigureError(f"{what} has shape {values.shape}, not [seeds][{n}{' ' + unit if unit else ''}]")
    return values


@dataclass(frozen=True)
class Band:
    """Mean and 95% t-interval over seeds at each x; where there is no interval (one seed), lo = hi = mean."""

    mean: np.ndarray  # [x]
    lo: np.ndarray    # [x]
    hi: np.ndarray    # [x]
    n: int            # seeds

    @property
    def err(self) -> np.ndarray:
        """[2][x]: the interval as lengths below and above the mean, for errorbar's yerr (or xerr)."""
        return np.nan_to_num(np.stack([self.mean - self.lo, self.hi - self.mean]), nan=0.0)


def mean_ci95(values: ArrayLike, clip: tuple[float, float] | None = None) -> Band:
    """The mean and 95% t-interval over seeds (base.stats.summarize) of values [seeds][x], per x.

    clip: a range the quantity cannot leave (a rate: (0, 1)); the interval is clipped into it.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise FigureError(f"per-seed values must be [seeds][points], not of shape {values.shape}")
    stats = [summarize(values[:, j]) for j in range(values.shape[1])]
    mean = np.array([s["mean"] for s in stats])
    lo, hi = np.array([s["ci95"] for s in stats]).reshape(-1, 2).T
    # One seed has no interval (NaN): draw the mean alone rather than fail.
    lo, hi = np.where(np.isfinite(lo), lo, mean), np.where(np.isfinite(hi), hi, mean)
    if clip is not None:
        lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
    return Band(mean=mean, lo=lo, hi=hi, n=values.shape[0])


def curve_with_band(ax: Axes, x: ArrayLike, band: Band, color: str, label: str) -> None:
    """The mean over seeds at each x as a line, and its 95% interval as a band of the same colour around it."""
    ax.plot(x, band.mean, color=color, label=label)
    # Light and without an edge, so that the other run's line still shows where two bands overlap.
    ax.fill_between(x, band.lo, band.hi, color=color, alpha=0.2, linewidth=0)


def bars_with_ci(ax: Axes, x: ArrayLike, band: Band, color: str, label: str, slot: int = 0, slots: int = 1,
                 width: float = 0.8, **kwargs: Any) -> None:
    """A bar of the mean over seeds at each x, with its 95% interval as an error bar.

    slot, slots: this run's place among `slots` bars of width `width` side by side at each x (0 leftmost), so
    that runs compared per x stand next to each other. kwargs go to `Axes.bar` (error_kw, ...).
    """
    offset = (slot - (slots - 1) / 2) * width  # the group of bars is centred on x
    ax.bar(np.asarray(x, dtype=float) + offset, band.mean, width, yerr=band.err, color=color, label=label, **kwargs)


def rate_bars(runs: Sequence[tuple[dict, str, str]], key: str, groups: Sequence[str], tick_labels: Sequence[str],
              xlabel: str, ylabel: str, path: Path, clip: tuple[float, float] = (0.0, 1.0)) -> tuple[Path, list[int]]:
    """A per-group rate of each run (extra[key]: seeds x groups) as grouped bars with 95% intervals over seeds.

    runs: (extra, label, colour) in the order the bars stand; returns the saved figure and each run's seeds.
    """
    x = np.arange(len(groups))
    ns = []
    with figure_style():
        fig, ax = new_figure()
        for i, (extra, label, color) in enumerate(runs):
            rates = per_seed(extra[key], len(groups), f"extra.{key}")
            bars_with_ci(ax, x, mean_ci95(rates, clip=clip), color, label, slot=i, slots=len(runs), width=0.38,
                         error_kw={"elinewidth": 0.9, "capsize": 2})
            ns.append(rates.shape[0])
        ax.set_xticks(x, list(tick_labels))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_ylim(0.0, 1.02)
        legend_above(ax, ncol=len(runs))
        return save_figure(fig, path), ns


def n_seeds(n: int) -> str:
    """'1 seed', '8 seeds'."""
    return f"{n} seed" + ("" if n == 1 else "s")


def seeds_phrase(best_n: int, baseline_n: int, baseline: str = "baseline") -> str:
    """How many seeds a best-against-baseline figure averages, for its caption.

    '8 seeds', or '8 seeds (best candidate) and 4 seeds (DPO)' when the two runs differ;
    baseline names the baseline in the second form.
    """
    if best_n == baseline_n:
        return n_seeds(best_n)
    return f"{n_seeds(best_n)} (best candidate) and {n_seeds(baseline_n)} ({baseline})"


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _error(mean: float, ci95: object) -> tuple[float, float]:
    """Lower and upper error-bar lengths from a 95% interval; zero where it is unknown (n = 1)."""
    if isinstance(ci95, list | tuple) and len(ci95) == 2 and _finite(ci95[0]) and _finite(ci95[1]):
        return max(mean - float(ci95[0]), 0.0), max(float(ci95[1]) - mean, 0.0)
    return 0.0, 0.0


def _seeds_phrase(ns: list[int]) -> str:
    """'8 seeds' or '4--8 seeds' for the caption."""
    ns = sorted({int(n) for n in ns})
    if not ns:
        return "seeds"
    if len(ns) == 1:
        return n_seeds(ns[0])
    return f"{ns[0]}--{ns[-1]} seeds"


def metric_per_run(runs: list[dict], baseline: dict, metric: str, direction: str, out_dir: Path) -> Figure:
    """The mean metric of each run, with 95% intervals over seeds, against the baseline.

    runs: [{"label", "mean", "ci95": [lo, hi], "n", "status": "ok"|"failed"}] in order;
    baseline: {"mean", "ci95", "n"} (may be empty or None when there is none).
    Successful runs are points with error bars, failed runs an x at the bottom of the
    axes labelled "failed", the baseline a horizontal line with its interval shaded.
    Writes out_dir/metric_per_run.pdf; raises FigureError when there is nothing to plot.
    """
    if direction not in ("max", "min"):
        raise FigureError(f"metric direction must be 'max' or 'min', not {direction!r}")
    ok = [(i, r) for i, r in enumerate(runs) if r.get("status") == "ok" and _finite(r.get("mean"))]
    ok_index = {i for i, _ in ok}
    # A run without a usable mean has nothing to draw but its failure.
    failed = [i for i in range(len(runs)) if i not in ok_index]
    has_base = bool(baseline) and _finite(baseline.get("mean"))
    if not ok and not has_base:
        raise FigureError(f"no successful run and no baseline to plot for {metric}")

    with figure_style():
        fig, ax = new_figure()
        xs = list(range(1, len(runs) + 1))
        if has_base:
            base_mean = float(baseline["mean"])
            lo, hi = _error(base_mean, baseline.get("ci95"))
            # Span the whole axis (axes coordinates in x) so that the band reads as a reference level.
            ax.axhspan(base_mean - lo, base_mean + hi, color=BASELINE_COLOR, alpha=0.15, linewidth=0)
            ax.axhline(base_mean, color=BASELINE_COLOR, linestyle="--", linewidth=1.2,
                       label="baseline (mean, 95% CI band)")
        if ok:
            means = [float(r["mean"]) for _, r in ok]
            errs = [_error(float(r["mean"]), r.get("ci95")) for _, r in ok]
            ax.errorbar([xs[i] for i, _ in ok], means, yerr=[[e[0] for e in errs], [e[1] for e in errs]],
                        fmt="o", color=RUN_COLOR, ecolor=RUN_COLOR, elinewidth=1.2,
                        label="run mean, 95% CI")
        if failed:
            # x in data coordinates, y in axes coordinates: the marks sit at the bottom whatever the y range.
            bottom = blended_transform_factory(ax.transData, ax.transAxes)
            ax.scatter([xs[i] for i in failed], [0.04] * len(failed), marker="x", s=40, color=FAILED_COLOR,
                       transform=bottom, clip_on=False, zorder=3, label="failed run")
            for i in failed:
                ax.text(xs[i], 0.09, "failed", transform=bottom, ha="center", va="bottom", fontsize=7,
                        color=FAILED_COLOR)
            # Leave room under the lowest point for the marks and their labels.
            ax.margins(y=0.25)
        point_axes(ax, [plain_text(r.get("label", f"run {i + 1}")) for i, r in enumerate(runs)], metric, direction,
                   max_chars=8)
        legend_above(ax, ncol=3, handletextpad=0.4)
        path = save_figure(fig, Path(out_dir) / "metric_per_run.pdf")

    parts = []
    if ok:
        parts.append(f"Mean {texttt(metric)} of each successful run (points); error bars are "
                     f"95\\% t-intervals over {_seeds_phrase([r.get('n', 0) for _, r in ok])}.")
    else:
        parts.append(f"No run of {texttt(metric)} succeeded.")
    if has_base:
        parts.append("The dashed line is the baseline's mean and the shaded band its 95\\% t-interval over "
                     f"{_seeds_phrase([baseline.get('n', 0)])}.")
    if failed:
        parts.append(f"{len(failed)} failed run{'s are' if len(failed) > 1 else ' is'} marked with an x.")
    parts.append(f"{'Higher' if direction == 'max' else 'Lower'} is better.")
    return Figure(path=path, caption=" ".join(parts), label="fig:metric_per_run")


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def template_figures(template_root: Path, best: dict, baseline: dict, out_dir: Path) -> list[Figure]:
    """The template's own figures of the best run against the baseline; [] if it has none.

    Loads template_root/figures.py by path (templates are not packages) and calls its
    `figures(best_final_info, baseline_final_info, out_dir) -> list[Figure]`. Any failure,
    on import or in the call, or a result that is not a list of existing Figure files,
    becomes a FigureError naming the template with a one-line reason.
    """
    template_root = Path(template_root)
    source = template_root / "figures.py"
    if not source.is_file():
        return []
    name = template_root.name
    module_name = f"_scientist_template_figures_{name}"
    open_before = set(plt.get_fignums())
    try:
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {source}")
        module = importlib.util.module_from_spec(spec)
        # Registered while it runs (dataclasses and pickling look modules up there), removed after,
        # so that an edited figures.py is loaded afresh next time.
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
            make = getattr(module, "figures", None)
            if not callable(make):
                raise AttributeError("figures.py defines no figures(best, baseline, out_dir) function")
            out_dir = Path(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            result = make(best, baseline, out_dir)
        finally:
            sys.modules.pop(module_name, None)
    except Exception as e:  # a template's figure code is not ours: any fault is one line in the paper log
        raise FigureError(f"template {name}: figures.py failed: {type(e).__name__}: {_one_line(e)}") from e
    finally:
        # Close whatever the template left open, so that many papers do not leak figures.
        for num in set(plt.get_fignums()) - open_before:
            plt.close(num)
    if not isinstance(result, list) or not all(isinstance(f, Figure) for f in result):
        raise FigureError(f"template {name}: figures() returned {type(result).__name__}, not a list of Figure")
    missing = [str(f.path) for f in result if not Path(f.path).is_file()]
    if missing:
        raise FigureError(f"template {name}: figures() returned figures whose files do not exist: "
                          f"{_one_line(', '.join(missing))}")
    return result

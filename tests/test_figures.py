"""Paper figures: the per-run metric figure and templates' own figures, on synthetic final_info dicts."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import BarContainer
from pypdf import PdfReader

from base.stats import summarize
from papers.figures import (
    Figure,
    FigureError,
    bars_with_ci,
    curve_with_band,
    mean_ci95,
    metric_per_run,
    n_seeds,
    per_seed,
    read_extra,
    seeds_phrase,
    template_figures,
    texttt,
)

ROOT = Path(__file__).resolve().parent.parent
DISCOPOP = ROOT / "templates" / "discopop"

# A '%' or '_' not preceded by a backslash would break (or comment out) the LaTeX caption.
UNESCAPED = re.compile(r"(?<!\\)[%_&#]")


def assert_pdf(path: Path) -> None:
    """A non-empty PDF with one page that pypdf can open."""
    assert path.suffix == ".pdf" and path.is_file() and path.stat().st_size > 0
    assert len(PdfReader(path).pages) == 1


def assert_caption_safe(fig: Figure) -> None:
    assert fig.caption and not UNESCAPED.search(fig.caption), fig.caption
    assert "95\\%" in fig.caption
    assert fig.label.startswith("fig:")


def final_info(shift: float, seeds: int = 3, betas: tuple[float, ...] = (0.1, 0.5, 2.0)) -> dict:
    """A final_info.json-shaped dict with a small synthetic reward-KL frontier."""
    rng = np.random.default_rng(int(shift * 100))
    b = np.asarray(betas)
    kl = (1.5 / b)[None, :] * (1 + 0.05 * rng.standard_normal((seeds, b.size)))
    gain = shift + np.log1p(kl) + 0.02 * rng.standard_normal((seeds, b.size))
    values = list(rng.normal(1.3 + shift, 0.01, seeds))
    mean = float(np.mean(values))
    return {
        "template": "discopop", "metric": "reward_gain_at_kl", "direction": "max", "n": seeds,
        "metrics": {"reward_gain_at_kl": {"values": values, "mean": mean, "stderr": 0.01,
                                          "ci95": [mean - 0.02, mean + 0.02], "n": seeds}},
        "extra": {"betas": list(betas), "kl": kl.tolist(), "reward_gain": gain.tolist(), "kl_budget": 1.0,
                  "reference_reward": 0.84, "oracle_gain": 1.9},
        "evaluate_s": 1.0,
    }


RUNS = [
    {"label": "run 1", "mean": 1.35, "ci95": [1.34, 1.36], "n": 8, "status": "ok"},
    {"label": "run 2", "mean": None, "ci95": None, "n": 0, "status": "failed"},
    {"label": "run 3 (50% lr_scale)", "mean": 1.37, "ci95": [1.36, 1.38], "n": 8, "status": "ok"},
    {"label": "run 4", "mean": 1.20, "ci95": [float("nan"), float("nan")], "n": 1, "status": "ok"},
]
BASELINE = {"mean": 1.36, "ci95": [1.355, 1.365], "n": 8}


def test_metric_per_run_writes_pdf_with_failed_runs(tmp_path: Path) -> None:
    fig = metric_per_run(RUNS, BASELINE, "reward_gain_at_kl", "max", tmp_path / "figures")
    assert fig.path == tmp_path / "figures" / "metric_per_run.pdf"
    assert_pdf(fig.path)
    assert_caption_safe(fig)
    assert fig.label == "fig:metric_per_run"
    assert "1 failed run is marked" in fig.caption and "Higher is better" in fig.caption
    assert plt.get_fignums() == []  # closed after saving


def test_metric_per_run_is_reproducible(tmp_path: Path) -> None:
    a = metric_per_run(RUNS, BASELINE, "loss", "min", tmp_path / "a").path.read_bytes()
    b = metric_per_run(RUNS, BASELINE, "loss", "min", tmp_path / "b").path.read_bytes()
    assert a == b


def test_metric_per_run_with_only_failures_or_only_baseline(tmp_path: Path) -> None:
    failed = [{"label": "run 1", "status": "failed"}, {"label": "run 2", "status": "failed"}]
    assert_pdf(metric_per_run(failed, BASELINE, "acc", "max", tmp_path / "a").path)
    assert_pdf(metric_per_run(RUNS[:1], {}, "acc", "max", tmp_path / "b").path)


def test_metric_per_run_nothing_to_plot(tmp_path: Path) -> None:
    with pytest.raises(FigureError, match="no successful run and no baseline"):
        metric_per_run([{"label": "run 1", "status": "failed"}], {}, "acc", "max", tmp_path)
    with pytest.raises(FigureError):
        metric_per_run([], None, "acc", "max", tmp_path)
    assert not (tmp_path / "metric_per_run.pdf").exists()


def test_discopop_template_figures(tmp_path: Path) -> None:
    figs = template_figures(DISCOPOP, final_info(0.1), final_info(0.0), tmp_path)
    assert [f.label for f in figs] == ["fig:reward_kl_frontier", "fig:reward_gain_per_beta"]
    for fig in figs:
        assert fig.path.parent == tmp_path
        assert_pdf(fig.path)
        assert_caption_safe(fig)
        assert "3 seeds" in fig.caption
    assert "KL budget" in figs[0].caption
    assert plt.get_fignums() == []


def test_discopop_template_figures_reject_missing_frontier(tmp_path: Path) -> None:
    broken = final_info(0.0)
    del broken["extra"]["kl"]
    with pytest.raises(FigureError, match=r"template discopop: .*extra\.kl"):
        template_figures(DISCOPOP, final_info(0.1), broken, tmp_path)


def test_template_without_figures(tmp_path: Path) -> None:
    assert template_figures(tmp_path, {}, {}, tmp_path / "out") == []


def test_broken_template_figures(tmp_path: Path) -> None:
    root = tmp_path / "mytemplate"
    root.mkdir()
    (root / "figures.py").write_text(
        "import matplotlib.pyplot as plt\n"
        "def figures(best, baseline, out_dir):\n"
        "    plt.figure()  # left open: the loader must close it\n"
        "    raise ValueError('bad frontier\\nsecond line')\n"
    )
    with pytest.raises(FigureError, match="template mytemplate: .*ValueError: bad frontier second line") as e:
        template_figures(root, {}, {}, tmp_path / "out")
    assert "\n" not in str(e.value)
    assert plt.get_fignums() == []

    (root / "figures.py").write_text("import does_not_exist\n")
    with pytest.raises(FigureError, match="template mytemplate: .*ModuleNotFoundError"):
        template_figures(root, {}, {}, tmp_path / "out")

    (root / "figures.py").write_text("def figures(best, baseline, out_dir):\n    return ['not a figure']\n")
    with pytest.raises(FigureError, match="template mytemplate: .*not a list of Figure"):
        template_figures(root, {}, {}, tmp_path / "out")


# ---------------------------------------------------------------- the helpers templates' figures use


def test_mean_ci95_per_x_over_seeds() -> None:
    values = np.array([[1.0, 0.2], [2.0, 0.4], [4.0, 0.9]])
    band = mean_ci95(values)
    for j in range(2):
        s = summarize(values[:, j])
        assert band.mean[j] == s["mean"] and [band.lo[j], band.hi[j]] == s["ci95"]
    assert band.n == 3 and band.err.shape == (2, 2)
    np.testing.assert_allclose(band.err, [band.mean - band.lo, band.hi - band.mean])
    rate = mean_ci95(values[:, 1:], clip=(0.0, 1.0))
    assert rate.lo[0] >= 0.0 and rate.hi[0] == 1.0  # a rate's interval stays in [0, 1]
    one = mean_ci95([[0.5, 0.7]])  # one seed: no interval, no error bar, no NaN
    assert list(one.lo) == list(one.hi) == list(one.mean) == [0.5, 0.7] and not one.err.any()
    with pytest.raises(FigureError, match="must be \\[seeds\\]\\[points\\]"):
        mean_ci95([1.0, 2.0])


def test_curve_with_band_and_bars_with_ci_draw_the_band() -> None:
    band = mean_ci95(np.array([[1.0, 0.2, 0.5], [2.0, 0.4, 0.7], [4.0, 0.9, 0.6]]))
    x = np.array([10.0, 20.0, 30.0])
    fig, (curve_ax, bar_ax) = plt.subplots(1, 2)
    try:
        curve_with_band(curve_ax, x, band, "#0072B2", "run")
        (line,) = curve_ax.get_lines()
        assert line.get_label() == "run" and list(line.get_xdata()) == list(x)
        np.testing.assert_allclose(line.get_ydata(), band.mean)
        (shade,) = curve_ax.collections  # the band: from lo to hi at every x
        ys = shade.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(band.lo.min()) and ys.max() == pytest.approx(band.hi.max())
        for slot in (0, 1):  # two runs side by side at each x, centred on it
            bars_with_ci(bar_ax, x, band, "#555555", f"run {slot}", slot=slot, slots=2, width=4.0)
        left, right = [c for c in bar_ax.containers if isinstance(c, BarContainer)]
        assert [b.get_x() + b.get_width() / 2 for b in left] == pytest.approx(x - 2.0)
        assert [b.get_x() + b.get_width() / 2 for b in right] == pytest.approx(x + 2.0)
        np.testing.assert_allclose([b.get_height() for b in right], band.mean)
    finally:
        plt.close(fig)


def test_seeds_phrase_and_tex() -> None:
    assert (n_seeds(1), n_seeds(8)) == ("1 seed", "8 seeds")
    assert seeds_phrase(8, 8) == "8 seeds"
    assert seeds_phrase(1, 4, "DPO") == "1 seed (best candidate) and 4 seeds (DPO)"
    assert texttt("reward_gain_at_kl") == "\\texttt{reward\\_gain\\_at\\_kl}"


def test_read_extra_names_every_missing_key() -> None:
    assert read_extra({"extra": {"a": 1, "b": 2}}, "x", ("a",)) == {"a": 1, "b": 2}
    with pytest.raises(FigureError, match="^baseline's final_info.json has no extra.b, extra.c$"):
        read_extra({"extra": {"a": 1}}, "baseline's", ("a", "b", "c"))


def test_per_seed_checks_seeds_by_x() -> None:
    values = per_seed([[1, 2, 3], [4, 5, 6]], 3, "x")
    assert values.dtype == float and values.shape == (2, 3)
    with pytest.raises(FigureError, match=r"^baseline's extra.curve has shape \(2, 3\), not \[seeds\]\[4 points\]$"):
        per_seed([[1, 2, 3], [4, 5, 6]], 4, "baseline's extra.curve", "points")
    with pytest.raises(FigureError, match=r"^extra.rate has shape \(3,\), not \[seeds\]\[3\]$"):
        per_seed([1, 2, 3], 3, "extra.rate")


def synthetic(template: str, seeds: int, rng: np.random.Generator) -> dict:
    """A final_info.json-shaped dict holding what the template's figures.py reads, with `seeds` seeds."""
    if template == "discopop":
        return final_info(0.1, seeds)
    if template == "diffusion":
        return {"extra": {"datasets": ["moons", "rings"], "figure_heldout": rng.uniform(-2, 2, (2, 40, 2)).tolist(),
                          "figure_samples": rng.uniform(-2, 2, (2, 40, 2)).tolist(),
                          "per_dataset": {"mmd": rng.uniform(0, 0.1, (seeds, 2)).tolist(),
                                          "mmd_noise": rng.uniform(0.3, 0.4, (seeds, 2)).tolist()}}}
    if template == "kinetix":
        solved = rng.uniform(0, 1, (seeds, 6))
        return {"extra": {"levels": ["s/h2_one_wheel_car", "s/h4_thrust_aim"], "episodes_per_level": 8,
                          "per_level_solve_rate": rng.uniform(0, 1, (seeds, 2)).tolist(),
                          "train_curves": {"steps": list(range(0, 6000, 1000)), "solved": solved.tolist(),
                                           "return": solved.tolist()}}}
    if template == "navix":
        curve = {"steps": list(range(2048, 12288, 2048)), "solved": rng.uniform(0, 1, (seeds, 5)).tolist(),
                 "return": rng.uniform(0, 1, (seeds, 5)).tolist()}
        return {"extra": {"envs": ["Navix-DoorKey-5x5-v0", "Navix-Empty-Random-6x6-v0"], "episodes_per_env": 8,
                          "per_env_success_rate": rng.uniform(0, 1, (seeds, 2)).tolist(),
                          "train_curves": [curve, curve]}}
    if template == "open":
        return {"extra": {"train_return": rng.normal(size=(seeds, 5)).tolist(), "curve_timesteps": [1, 2, 3, 4, 5],
                          "env": "Breakout-MinAtar&#"},
                "metrics": {"return": {"values": rng.normal(20, 3, seeds).tolist()}}}
    return {"extra": {"checkpoint_steps": [100, 200, 300], "val_bpc_curve": rng.uniform(2, 4, (seeds, 3)).tolist()},
            "metrics": {"val_bpc": {"values": rng.uniform(2, 4, seeds).tolist()}}}


@pytest.mark.parametrize("template", ["discopop", "diffusion", "kinetix", "open", "transformer", "navix"])
def test_every_template_figures_from_synthetic_results(template: str, tmp_path: Path) -> None:
    """Equal seed counts, then one seed against four (no interval, and the two counts named)."""
    rng = np.random.default_rng(0)
    root = ROOT / "templates" / template
    for best_n, base_n in ((3, 3), (1, 4)):
        figs = template_figures(root, synthetic(template, best_n, rng), synthetic(template, base_n, rng),
                                tmp_path / f"{best_n}_{base_n}")
        assert len(figs) == 2
        for fig in figs:
            assert_pdf(fig.path)
            assert fig.caption and not UNESCAPED.search(fig.caption), fig.caption
        captions = " ".join(f.caption for f in figs)
        assert "1 seeds" not in captions
        assert ("3 seeds" if best_n == base_n else "1 seed (best candidate) and 4 seeds") in captions
    with pytest.raises(FigureError, match=f"template {template}: .*final_info.json has no extra"):
        template_figures(root, {"extra": {}}, synthetic(template, 3, rng), tmp_path / "missing")
    assert plt.get_fignums() == []

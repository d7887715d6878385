"""Scaling plots on log-log axes, one colour per paradigm, each written as PNG and PDF.

Losses and token errors are not on one scale across paradigms (vocabularies and targets differ: MAR's
loss is a denoising error near 0.27, the others' cross-entropies 2.5-4), so they get one panel per
paradigm plus a panel of every paradigm divided by its smallest model's value, where the slopes
(exponents) compare. FID and KID come from one evaluator and share an axis.

Each paradigm shows its runs (mean +- std over seeds with error bars when a point has several
seeds), its fitted law as a line with the bootstrap confidence band, and in the legend the law with
metric-aware symbols (``FID = (b C)^alpha``), the alpha interval, r and the seed count. A degenerate
fit is named in the legend and not drawn. Legends sit outside the axes. Matplotlib is used through
the Agg canvas only (no pyplot state, no display needed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from genarena.scaling.fit import (
    FitResult,
    Point,
    PowerLawFit,
    SaturatingFit,
    Unfit,
    frontier_points,
    scaling_points,
)

log = logging.getLogger(__name__)

PARADIGM_COLORS = {"var": "#1f77b4", "ar": "#ff7f0e", "maskgit": "#2ca02c", "mar": "#d62728",
                   "var_diffusion": "#9467bd"}
PARADIGM_NAMES = {"var": "VAR", "ar": "AR (raster)", "maskgit": "MaskGIT", "mar": "MAR",
                  "var_diffusion": "VAR + diffusion head"}
OTHER_COLOR = "#7f7f7f"
PARADIGM_ORDER = tuple(PARADIGM_COLORS)

AXIS_LABELS = {
    "params_non_embedding": "non-embedding parameters N",
    "params": "parameters N (all)",
    "flops_train_total": "training compute C (FLOPs)",
    "tokens_seen": "training tokens D",
    "sample_s_per_image": "sampling time t (s / image)",
    "val_loss": "validation loss (final)",
    "val_loss_best": "validation loss (best)",
    "val_loss_last": "validation loss, last scale",
    "val_loss_scale_mean": "validation loss, mean over scales",
    "val_token_error": "validation token error",
    "fid": "FID",
    "kid_mean": "KID",
}
# symbols of the fitted quantity and of x in equations: FID = (b C)^alpha, loss = (b N)^alpha
METRIC_SYMBOLS = {"val_token_error": "err", "fid": "FID", "kid_mean": "KID"}
X_SYMBOLS = {"params_non_embedding": "N", "params": "N", "flops_train_total": "C", "tokens_seen": "D",
             "sample_s_per_image": "t"}
# metrics measured by one evaluator for every paradigm: their levels compare, so one shared axis
COMPARABLE_METRICS = frozenset({"fid", "kid_mean"})


@dataclass(frozen=True)
class PlotSpec:
    """One figure: ``metric`` against ``x``; ``frontier`` fits each paradigm's compute-optimal envelope."""

    name: str
    metric: str
    x: str
    frontier: bool = False


def default_specs(metric: str, params_key: str = "params_non_embedding") -> list[PlotSpec]:
    """Loss vs parameters, loss vs compute (+ frontier), token error vs compute, FID vs compute and
    FID vs sampling time."""
    return [
        PlotSpec("loss_vs_params", metric, params_key),
        PlotSpec("loss_vs_compute", metric, "flops_train_total", frontier=True),
        PlotSpec("token_error_vs_compute", "val_token_error", "flops_train_total"),
        PlotSpec("fid_vs_compute", "fid", "flops_train_total"),
        PlotSpec("fid_vs_sampling_time", "fid", "sample_s_per_image"),
    ]


def paradigm_color(paradigm: str) -> str:
    return PARADIGM_COLORS.get(paradigm, OTHER_COLOR)


def paradigm_name(paradigm: str) -> str:
    return PARADIGM_NAMES.get(paradigm, paradigm)


def metric_symbol(metric: str) -> str:
    """The fitted quantity's symbol: ``loss`` for every validation loss, ``FID``, ``KID``, ``err``."""
    return METRIC_SYMBOLS.get(metric, "loss" if "loss" in metric else metric)


def x_symbol(x: str) -> str:
    return X_SYMBOLS.get(x, "X")


def axis_label(key: str) -> str:
    """A readable axis label (never a raw column name when the key is known)."""
    return AXIS_LABELS.get(key, key.replace("_", " "))


def _tex_number(v: float, digits: int = 3) -> str:
    """``2.1e-05`` as mathtext ``2.1\\times10^{-5}``."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    exp = int(math.floor(math.log10(abs(v))))
    if -2 <= exp <= 3:
        return f"{v:.{digits}g}"
    return rf"{v / 10 ** exp:.2g}\times10^{{{exp}}}"


def _math_name(symbol: str) -> str:
    return rf"\mathrm{{{symbol}}}" if len(symbol) > 1 else symbol


def seed_text(fit: PowerLawFit | SaturatingFit) -> str:
    """``4 points × 3 seeds`` (``1-3 seeds`` when points differ)."""
    lo, hi = fit.seeds
    seeds = f"{lo} seed" + ("s" if lo > 1 else "") if lo == hi else f"{lo}-{hi} seeds"
    return f"{fit.points} points × {seeds}"


def equation_label(fit: FitResult, metric: str, x: str) -> str:
    """The law in mathtext with metric-aware symbols, e.g. ``$\\mathrm{FID}=(7.5\\times10^{-15}\\,C)^{-0.8}$``."""
    y, xs = _math_name(metric_symbol(metric)), x_symbol(x)
    if isinstance(fit, PowerLawFit):
        return rf"${y}=({_tex_number(fit.beta)}\,{xs})^{{{fit.alpha:.3g}}}$"
    if isinstance(fit, SaturatingFit):
        return rf"${y}={_tex_number(fit.E)}+({_tex_number(fit.X0)}/{xs})^{{{fit.alpha:.3g}}}$"
    return ""


def alpha_label(fit: PowerLawFit, with_r: bool = True) -> str:
    """``alpha = -0.062 [-0.063, -0.050] (95% CI, bootstrap over seeds), r = -0.999`` in mathtext."""
    ci = (rf" [{fit.alpha_ci[0]:.3g}, {fit.alpha_ci[1]:.3g}] ({fit.ci_level:.0%} CI, bootstrap over "
          rf"{fit.ci_method})" if fit.alpha_ci else " (no CI)")
    return rf"$\alpha={fit.alpha:.3g}${ci}" + (rf", $r={fit.r:.3f}$" if with_r else "")


def fit_label(paradigm: str, fit: FitResult | None, metric: str = "val_loss", x: str = "params") -> str:
    """One legend entry for a paradigm's fit: the law, alpha with its interval, r and the seed count;
    or why no law is drawn."""
    name = paradigm_name(paradigm)
    if isinstance(fit, (PowerLawFit, SaturatingFit)) and fit.degenerate:
        return f"{name}: {fit.kind.replace('_', ' ')} not drawn ({short_reason(fit.degenerate)})"
    if isinstance(fit, PowerLawFit):
        return f"{name}: {equation_label(fit, metric, x)}, {alpha_label(fit)}; {seed_text(fit)}"
    if isinstance(fit, SaturatingFit):
        return f"{name}: {equation_label(fit, metric, x)} (saturating)"
    if isinstance(fit, Unfit):
        return f"{name}: no fit ({short_reason(fit.reason)})"
    return f"{name} (no fit)"


def short_reason(reason: str, width: int = 72) -> str:
    """The first clause of a reason, without the ``paradigm=...: metric vs x:`` prefix."""
    text = reason.split(": ", 2)[-1] if reason.count(": ") >= 2 and "=" in reason.split(":")[0] else reason
    text = text.split("; ")[0]
    return text if len(text) <= width else text[: width - 3] + "..."


def drawable(fit: FitResult | None) -> bool:
    """A fit that is drawn as a law: made and not degenerate."""
    return isinstance(fit, (PowerLawFit, SaturatingFit)) and not fit.degenerate


def _usable(rows: Sequence[Mapping[str, Any]], metric: str, x: str) -> list[Mapping[str, Any]]:
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return [r for r in rows if ok(r.get(metric)) and ok(r.get(x))]


def _paradigms(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names = {str(r.get("paradigm")) for r in rows}
    return [p for p in PARADIGM_ORDER if p in names] + sorted(names - set(PARADIGM_ORDER))


def _number(v: float) -> str:
    """A tick label: plain between 1e-3 and 1e4, else ``m x 10^k`` in mathtext."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    exp = int(math.floor(math.log10(abs(v)) + 1e-9))
    m = v / 10 ** exp
    return rf"$10^{{{exp}}}$" if abs(m - 1) < 1e-6 else rf"${m:.2g}\times10^{{{exp}}}$"


def _log_ticks(axis: Any, lo: float, hi: float) -> None:
    """Readable ticks on a log axis spanning [lo, hi]: linear steps under one decade, 1-2-5 under three,
    decades above; plain numbers where they are short; no minor labels."""

    ratio = hi / lo
    if ratio < 8:
        ticks = [t for t in MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
        if len(ticks) < 2:
            ticks = [lo, hi]
        axis.set_major_locator(FixedLocator(ticks))
    elif ratio < 1e3:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        axis.set_major_locator(LogLocator(base=10))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _number(v)))
    axis.set_minor_formatter(NullFormatter())


def _limits(values: Sequence[float], pad: float = 0.06) -> tuple[float, float]:
    """Log-space limits around ``values`` with a margin of ``pad`` of their log range (at least 2%)."""
    lo, hi = math.log(min(values)), math.log(max(values))
    margin = max(pad * (hi - lo), 0.02)
    return math.exp(lo - margin), math.exp(hi + margin)


class _Axes:
    """One log-log axes and the values drawn on it, so its limits and ticks fit them."""

    def __init__(self, ax: Any) -> None:
        self.ax, self.xs, self.ys = ax, [], []
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
        ax.grid(True, which="minor", lw=0.2, alpha=0.3)

    def seen(self, x: Any, y: Any) -> None:
        self.xs += [float(v) for v in np.ravel(x) if v > 0]
        self.ys += [float(v) for v in np.ravel(y) if v > 0]

    def finish(self, xlabel: str, ylabel: str) -> None:
        if self.xs:
            lo, hi = _limits(self.xs)
            self.ax.set_xlim(lo, hi)
            _log_ticks(self.ax.xaxis, lo, hi)
        if self.ys:
            lo, hi = _limits(self.ys)
            self.ax.set_ylim(lo, hi)
            _log_ticks(self.ax.yaxis, lo, hi)
        self.ax.set_xlabel(xlabel, fontsize=8)
        self.ax.set_ylabel(ylabel, fontsize=8)
        self.ax.tick_params(labelsize=7)


def _draw_points(axes: _Axes, rows: Sequence[Mapping[str, Any]], points: Sequence[Point], spec: PlotSpec,
                 color: str, scale: float = 1.0, faint: bool = False, label: str | None = None) -> None:
    """Each point as its mean with the std over its seeds as an error bar (several seeds; the runs
    themselves as small dots) or as one marker (one seed); values divided by ``scale``."""
    ax = axes.ax
    several = any(p.seeds > 1 for p in points)
    px = np.array([p.x for p in points])
    py = np.array([p.y for p in points]) / scale
    if several:
        runs = [i for p in points for i in p.runs]
        rx = [float(rows[i][spec.x]) for i in runs]
        ry = [float(rows[i][spec.metric]) / scale for i in runs]
        ax.scatter(rx, ry, s=6, color=color, alpha=0.35, lw=0, zorder=2)
        axes.seen(rx, ry)
        std = np.array([p.y_std for p in points]) / scale
        ax.errorbar(px, py, yerr=[np.minimum(std, 0.9 * py), std], fmt="o", ms=4.5, color=color, capsize=2.5,
                    lw=1, alpha=0.5 if faint else 1.0, zorder=3, label=label)
    else:
        ax.scatter(px, py, s=22, color=color, alpha=0.45 if faint else 0.95, zorder=3, label=label)
    axes.seen(px, py)


def _draw_law(axes: _Axes, fit: FitResult | None, color: str, label: str | None, scale: float = 1.0,
              band_label: str | None = None) -> bool:
    """The fitted power law (solid, with its confidence band) or saturating law (dotted) over its x
    range; nothing for a degenerate or missing fit. Returns whether it drew."""
    if not drawable(fit):
        return False
    grid = np.geomspace(fit.x_min, fit.x_max, 60)
    curve = fit.predict(grid) / scale
    style = {"ls": ":", "lw": 1.4} if isinstance(fit, SaturatingFit) else {"ls": "-", "lw": 1.8}
    axes.ax.plot(grid, curve, color=color, label=label, zorder=4, **style)
    axes.seen(grid, curve)
    band = fit.band(grid) if isinstance(fit, PowerLawFit) else None
    if band is not None:
        axes.ax.fill_between(grid, band[0] / scale, band[1] / scale, color=color, alpha=0.15, lw=0, zorder=1,
                             label=band_label)
    return True


def _note(label: str) -> Any:
    """A legend entry without a mark (a fit that is not drawn, and why)."""

    return Line2D([], [], ls="none", marker="x", color="gray", label=label)


def _fit_of(fit_set: Mapping[str, FitResult], spec: PlotSpec) -> FitResult | None:
    return fit_set.get("frontier") if spec.frontier else fit_set.get("power_law")


def _draw_paradigm(axes: _Axes, rows: Sequence[Mapping[str, Any]], spec: PlotSpec,
                   fit_set: Mapping[str, FitResult], paradigm: str, point_keys: Sequence[str] | None,
                   *, compact: bool = False) -> list[Any]:
    """Points, law and band of one paradigm; returns the legend entries without a mark (fits not drawn).

    ``compact`` (several paradigms on one axes): one legend entry per law, named by paradigm, holding
    the equation, the alpha interval, r and the seed count; the markers are explained by the legend
    title. Otherwise (a paradigm's own panel) the runs, the law and its interval are separate entries."""
    color = paradigm_color(paradigm)
    points = scaling_points(rows, spec.metric, spec.x, point_keys=point_keys)
    main = _fit_of(fit_set, spec)
    prefix = f"{paradigm_name(paradigm)}: " if compact else ""
    notes = []
    several = max(p.seeds for p in points) > 1
    runs_label = None if compact else ("runs: mean $\\pm$ std over seeds" if several else "runs (1 seed)")
    if spec.frontier:
        _runs_of_one_size(axes, rows, spec, color, point_keys)
        _draw_points(axes, rows, points, spec, color, faint=True, label=runs_label)
        front = frontier_points(points)
        axes.ax.plot([p.x for p in front], [p.y for p in front], "o--", color=color, ms=5, lw=1, zorder=4,
                     mfc="none", label=None if compact else "compute-optimal frontier")
    else:
        _draw_points(axes, rows, points, spec, color, label=runs_label)
    if isinstance(main, PowerLawFit) and not main.degenerate:
        if compact:
            _draw_law(axes, main, color, fit_label(paradigm, main, spec.metric, spec.x))
        else:
            law = f"{equation_label(main, spec.metric, spec.x)}, $r={main.r:.3f}$; {seed_text(main)}"
            alpha = alpha_label(main, with_r=False)
            _draw_law(axes, main, color, law, band_label=f"{alpha}; shaded: 95% band" if main.alpha_ci else None)
            if not main.alpha_ci:
                notes.append(_note(alpha))
    elif main is not None:
        notes.append(_note(fit_label(paradigm, main, spec.metric, spec.x).split(": ", 1)[1] if not compact
                           else fit_label(paradigm, main, spec.metric, spec.x)))
    sat = fit_set.get("saturating")
    if sat is not None and not spec.frontier:
        if drawable(sat):
            _draw_law(axes, sat, color, f"{prefix}{equation_label(sat, spec.metric, spec.x)} (saturating)")
        elif isinstance(sat, SaturatingFit):
            notes.append(_note(f"{prefix}saturating fit not drawn: {short_reason(sat.degenerate or '')}"))
    return notes


def _runs_of_one_size(axes: _Axes, rows: Sequence[Mapping[str, Any]], spec: PlotSpec, color: str,
                      point_keys: Sequence[str] | None) -> None:
    """Thin lines joining the points of one model size trained for different lengths (the compute sweep)."""
    by_size: dict[Any, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_size.setdefault((r.get("depth"), r.get("width")), []).append(r)
    for members in by_size.values():
        pts = scaling_points(members, spec.metric, spec.x, point_keys=point_keys)
        if len(pts) > 1:
            axes.ax.plot([p.x for p in pts], [p.y for p in pts], "-", color=color, lw=0.6, alpha=0.4)


def _legend(ax: Any, notes: Sequence[Any], title: str | None = None, fontsize: float = 7) -> Any:
    """The axes' legend below it (never over the data), with the not-drawn notes appended."""
    handles, labels = ax.get_legend_handles_labels()
    handles += list(notes)
    labels += [n.get_label() for n in notes]
    if not handles:
        return None
    return ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=fontsize,
                     title=title, title_fontsize=fontsize, frameon=False, borderaxespad=0.0, handlelength=1.8)


def _title(spec: PlotSpec, title: str | None) -> str:
    head = f"{axis_label(spec.metric)[0].upper()}{axis_label(spec.metric)[1:]} vs {axis_label(spec.x)}"
    tail = [title] if title else []
    if spec.frontier:
        tail.append("fit on each paradigm's compute-optimal frontier")
    return head + ("\n" + ", ".join(tail) if tail else "")


def _save(fig: Any, out_dir: str | Path, name: str) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:  # no creation date: re-plotting the same points gives the same files
        fig.savefig(p, dpi=150, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    return paths


def _new_figure(size: tuple[float, float]) -> Any:

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_panels(rows: Sequence[Mapping[str, Any]], spec: PlotSpec,
                  fits: Mapping[str, Mapping[str, FitResult]] | None, title: str | None = None,
                  point_keys: Sequence[str] | None = None) -> Any:
    """One panel per paradigm (its own y scale) and, with several paradigms, a last panel with every
    paradigm divided by its smallest point's value, where exponents compare. Returns the Figure, or
    None when no run has both values."""
    pts = _usable(rows, spec.metric, spec.x)
    if not pts:
        return None
    paradigms = _paradigms(pts)
    n = len(paradigms) + (len(paradigms) > 1)
    ncols = {1: 1, 2: 2, 3: 3, 4: 2}.get(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _new_figure((4.6 * ncols, 4.4 * nrows))
    grid = fig.add_gridspec(nrows, ncols)
    ylabel = axis_label(spec.metric)
    for i, paradigm in enumerate(paradigms):
        ax = fig.add_subplot(grid[i // ncols, i % ncols])
        axes = _Axes(ax)
        mine = [r for r in pts if str(r.get("paradigm")) == paradigm]
        notes = _draw_paradigm(axes, mine, spec, (fits or {}).get(paradigm, {}), paradigm, point_keys)
        axes.finish(axis_label(spec.x), ylabel)
        ax.set_title(paradigm_name(paradigm), fontsize=10, color=paradigm_color(paradigm), fontweight="bold")
        _legend(ax, notes)
    if len(paradigms) > 1:
        _normalised_panel(fig.add_subplot(grid[(n - 1) // ncols, (n - 1) % ncols]), pts, paradigms, spec, fits,
                          point_keys)
    fig.suptitle(_title(spec, title), fontsize=11)
    return fig


def _normalised_panel(ax: Any, pts: Sequence[Mapping[str, Any]], paradigms: Sequence[str], spec: PlotSpec,
                      fits: Mapping[str, Mapping[str, FitResult]] | None,
                      point_keys: Sequence[str] | None) -> None:
    """Every paradigm's points and law divided by its smallest point's mean value: slopes compare."""
    axes = _Axes(ax)
    notes: list[Any] = []
    for paradigm in paradigms:
        mine = [r for r in pts if str(r.get("paradigm")) == paradigm]
        points = scaling_points(mine, spec.metric, spec.x, point_keys=point_keys)
        scale = points[0].y
        color = paradigm_color(paradigm)
        main = _fit_of((fits or {}).get(paradigm, {}), spec)
        shown = frontier_points(points) if spec.frontier else points
        _draw_points(axes, mine, shown, spec, color, scale)
        if isinstance(main, PowerLawFit) and not main.degenerate:
            ci = f" [{main.alpha_ci[0]:.3g}, {main.alpha_ci[1]:.3g}]" if main.alpha_ci else " (no CI)"
            _draw_law(axes, main, color, rf"{paradigm_name(paradigm)}: $\alpha={main.alpha:.3g}${ci}", scale)
        else:
            notes.append(_note(f"{paradigm_name(paradigm)}: no law drawn"))
    axes.finish(axis_label(spec.x), f"{axis_label(spec.metric)} / value at the smallest point")
    ax.set_title("All paradigms, each divided by its smallest point", fontsize=10)
    _legend(ax, notes)


def figure_shared(rows: Sequence[Mapping[str, Any]], spec: PlotSpec,
                  fits: Mapping[str, Mapping[str, FitResult]] | None, title: str | None = None,
                  point_keys: Sequence[str] | None = None) -> Any:
    """Every paradigm on one axes (for metrics whose levels compare, e.g. FID), legend below it.
    Returns the Figure, or None when no run has both values."""
    pts = _usable(rows, spec.metric, spec.x)
    if not pts:
        return None
    fig = _new_figure((7.6, 7.2))
    ax = fig.add_subplot()
    axes = _Axes(ax)
    notes: list[Any] = []
    for paradigm in _paradigms(pts):
        mine = [r for r in pts if str(r.get("paradigm")) == paradigm]
        notes += _draw_paradigm(axes, mine, spec, (fits or {}).get(paradigm, {}), paradigm, point_keys,
                                compact=True)
    axes.finish(axis_label(spec.x), axis_label(spec.metric))
    ax.set_title(_title(spec, title), fontsize=10)
    seeds = max(p.seeds for p in scaling_points(pts, spec.metric, spec.x, point_keys=point_keys))
    dots = "dots: runs, mean $\\pm$ std over seeds" if seeds > 1 else "dots: runs (1 seed per point)"
    _legend(ax, notes, title=f"{dots}; lines: fitted laws; shaded: 95% bootstrap band of each law")
    return fig


def plot_scaling(rows: Sequence[Mapping[str, Any]], spec: PlotSpec,
                 fits: Mapping[str, Mapping[str, FitResult]] | None, out_dir: str | Path,
                 title: str | None = None, point_keys: Sequence[str] | None = None) -> list[Path]:
    """Draw ``spec`` for ``rows`` (fits: paradigm -> {"power_law" | "frontier" | "saturating": fit}) and
    write ``<out_dir>/<spec.name>.png`` and ``.pdf``: one axes for :data:`COMPARABLE_METRICS`, one panel
    per paradigm otherwise. Returns the files, or [] (logged) when no run has both values."""
    make = figure_shared if spec.metric in COMPARABLE_METRICS else figure_panels
    fig = make(rows, spec, fits, title, point_keys)
    if fig is None:
        log.info("skipping %s: no run has both %s and %s", spec.name, spec.metric, spec.x)
        return []
    return _save(fig, out_dir, spec.name)


# fits[metric][x][paradigm][kind], as genarena-scaling builds them with fit_groups
FitTable = Mapping[str, Mapping[str, Mapping[str, Mapping[str, FitResult]]]]


def plot_all(rows: Sequence[Mapping[str, Any]], fits: FitTable, out_dir: str | Path,
             specs: Sequence[PlotSpec], title: str | None = None,
             point_keys: Sequence[str] | None = None) -> list[Path]:
    """Every spec whose metric is present; ``fits[metric][x]`` is :func:`fit_groups`'s result."""
    written: list[Path] = []
    for spec in specs:
        written += plot_scaling(rows, spec, fits.get(spec.metric, {}).get(spec.x), out_dir, title, point_keys)
    return written

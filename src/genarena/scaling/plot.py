"""Scaling plots on log-log axes, one colour per paradigm, each written as PNG and PDF.

Every plot shows the runs as points and each paradigm's fitted ``L = (beta X)^alpha`` as a line with
its equation (alpha, r) in the legend. Matplotlib is used through the Agg canvas only (no pyplot
state, no display needed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genarena.scaling.fit import FitResult, PowerLawFit, SaturatingFit, lower_envelope

log = logging.getLogger(__name__)

PARADIGM_COLORS = {"var": "#1f77b4", "ar": "#ff7f0e", "maskgit": "#2ca02c", "mar": "#d62728"}
OTHER_COLOR = "#7f7f7f"
PARADIGM_ORDER = tuple(PARADIGM_COLORS)

AXIS_LABELS = {
    "params_non_embedding": "non-embedding parameters N",
    "params": "parameters N (all)",
    "flops_train_total": "training compute C (FLOPs)",
    "tokens_seen": "training tokens D",
    "sample_s_per_image": "sampling time (s / image)",
    "val_loss": "validation loss (final)",
    "val_loss_best": "validation loss (best)",
    "val_loss_last": "validation loss, last scale",
    "val_loss_scale_mean": "validation loss, mean over scales",
    "val_token_error": "validation token error",
    "fid": "FID",
    "kid_mean": "KID",
}


@dataclass(frozen=True)
class PlotSpec:
    """One figure: ``metric`` against ``x``; ``frontier`` adds each paradigm's compute-optimal envelope."""

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


def _tex_number(v: float) -> str:
    """``2.1e-05`` as mathtext ``2.1\\times10^{-5}``."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    exp = int(math.floor(math.log10(abs(v))))
    if -2 <= exp <= 3:
        return f"{v:.3g}"
    return rf"{v / 10 ** exp:.2g}\times10^{{{exp}}}"


def fit_label(paradigm: str, fit: FitResult | None, symbol: str = "L") -> str:
    """Legend entry, e.g. ``var: L = (2.1e-5 X)^-0.13, r = -0.998``."""
    if isinstance(fit, PowerLawFit):
        return (rf"{paradigm}: ${symbol}=({_tex_number(fit.beta)}\,X)^{{{fit.alpha:.3g}}}$, "
                rf"$\alpha={fit.alpha:.3g}$, $r={fit.r:.3f}$")
    if isinstance(fit, SaturatingFit):
        return rf"{paradigm}: ${symbol}={_tex_number(fit.E)}+({_tex_number(fit.X0)}/X)^{{{fit.alpha:.3g}}}$"
    return f"{paradigm} (no fit)"


def _usable(rows: Sequence[Mapping[str, Any]], metric: str, x: str) -> list[Mapping[str, Any]]:
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return [r for r in rows if ok(r.get(metric)) and ok(r.get(x))]


def _paradigms(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names = {str(r.get("paradigm")) for r in rows}
    return [p for p in PARADIGM_ORDER if p in names] + sorted(names - set(PARADIGM_ORDER))


def plot_scaling(rows: Sequence[Mapping[str, Any]], spec: PlotSpec,
                 fits: Mapping[str, Mapping[str, FitResult]] | None, out_dir: str | Path,
                 title: str | None = None) -> list[Path]:
    """Draw ``spec`` for ``rows`` (fits: paradigm -> {"power_law" | "frontier" | "saturating": fit}) and
    write ``<out_dir>/<spec.name>.png`` and ``.pdf``. Returns the files, or [] (logged) when no run has
    both values."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = _usable(rows, spec.metric, spec.x)
    if not pts:
        log.info("skipping %s: no run has both %s and %s", spec.name, spec.metric, spec.x)
        return []
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for paradigm in _paradigms(pts):
        color = paradigm_color(paradigm)
        mine = [r for r in pts if str(r.get("paradigm")) == paradigm]
        xs = np.array([float(r[spec.x]) for r in mine])
        ys = np.array([float(r[spec.metric]) for r in mine])
        fit_set = (fits or {}).get(paradigm, {})
        main = fit_set.get("frontier") if spec.frontier else fit_set.get("power_law")
        ax.scatter(xs, ys, s=22, color=color, alpha=0.45 if spec.frontier else 0.9, zorder=3,
                   label=None if isinstance(main, PowerLawFit) else fit_label(paradigm, None))
        if spec.frontier:
            _runs_of_one_depth(ax, mine, spec, color)
            idx = lower_envelope(list(xs), list(ys))
            ax.plot(xs[idx], ys[idx], "o--", color=color, ms=5, lw=1, zorder=4)
        if isinstance(main, PowerLawFit):
            grid = np.geomspace(main.x_min, main.x_max, 50)
            ax.plot(grid, main.predict(grid), "-", color=color, lw=1.8, label=fit_label(paradigm, main))
        sat = fit_set.get("saturating")
        if isinstance(sat, SaturatingFit) and not spec.frontier:
            grid = np.geomspace(xs.min(), xs.max(), 50)
            ax.plot(grid, sat.predict(grid), ":", color=color, lw=1.2, label=fit_label(paradigm, sat))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(AXIS_LABELS.get(spec.x, spec.x))
    ax.set_ylabel(AXIS_LABELS.get(spec.metric, spec.metric))
    suffix = " (fit on the compute-optimal frontier)" if spec.frontier else ""
    ax.set_title((title + "\n" if title else "") + f"{spec.metric} vs {spec.x}{suffix}", fontsize=9)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.legend(fontsize=7, loc="best")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{spec.name}.{ext}" for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p, dpi=150)
    return paths


def _runs_of_one_depth(ax: Any, rows: Sequence[Mapping[str, Any]], spec: PlotSpec, color: str) -> None:
    """Thin lines joining runs of one model size trained for different lengths (the compute sweep)."""
    by_depth: dict[Any, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_depth.setdefault((r.get("depth"), r.get("width")), []).append(r)
    for members in by_depth.values():
        if len(members) > 1:
            members = sorted(members, key=lambda r: float(r[spec.x]))
            ax.plot([float(r[spec.x]) for r in members], [float(r[spec.metric]) for r in members], "-",
                    color=color, lw=0.6, alpha=0.4)


# fits[metric][x][paradigm][kind], as genarena-scaling builds them with fit_groups
FitTable = Mapping[str, Mapping[str, Mapping[str, Mapping[str, FitResult]]]]


def plot_all(rows: Sequence[Mapping[str, Any]], fits: FitTable, out_dir: str | Path,
             specs: Sequence[PlotSpec], title: str | None = None) -> list[Path]:
    """Every spec whose metric is present; ``fits[metric][x]`` is :func:`fit_groups`'s result."""
    written: list[Path] = []
    for spec in specs:
        written += plot_scaling(rows, spec, fits.get(spec.metric, {}).get(spec.x), out_dir, title)
    return written

"""Power-law fits of a metric L against a scaling coordinate X (parameters, training compute, ...).

Pure power law (VAR's convention): ``L = (beta X)^alpha``, i.e. the straight line
``log L = alpha log X + alpha log beta`` fitted by least squares in log-log space through every run;
Pearson r is taken in log-log space too. Saturating law: ``L = E + (X0 / X)^alpha`` (E: the
irreducible part).

Intervals are percentile bootstraps: over the points when each scaling point has one run, over the
seeds of each point (a cluster bootstrap: every point keeps its place, its seeds are drawn with
replacement) when a point has several seeds.

Fits never return NaN: bad input raises :class:`ScalingError` (``fit_power_law``) or, in
:func:`fit_groups`, becomes an :class:`Unfit` that carries the reason. A fit that was made but is no
law (too few points, no trend, a saturating parameter on its bound) carries ``degenerate``: the reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from genarena.errors import GenArenaError


class ScalingError(GenArenaError):
    """Runs that cannot be collected, or points that cannot be fitted, with the reason."""


MIN_POINTS = 3  # a power law through fewer distinct x is an exact line, not a tested law
MIN_ABS_R = 0.8  # below this |r| (log-log) the points show no power-law trend
CI_METHODS = ("points", "seeds")  # what the bootstrap resamples: the points, or the seeds of each point


@dataclass(frozen=True)
class PowerLawFit:
    """``L = (beta X)^alpha`` with Pearson r in log-log space and bootstrap intervals.

    ``n`` runs at ``points`` distinct scaling points with ``seeds`` = (fewest, most) seeds per point;
    ``ci_method``: what the bootstrap resampled (:data:`CI_METHODS`); ``draws``: the (slope, intercept)
    of log L on log X of every bootstrap resample, for confidence bands (not serialised)."""

    alpha: float
    beta: float
    r: float
    n: int
    x_min: float
    x_max: float
    alpha_ci: tuple[float, float] | None = None
    beta_ci: tuple[float, float] | None = None
    ci_level: float = 0.95
    ci_draws: int = 0
    ci_method: str | None = None
    points: int = 0
    seeds: tuple[int, int] = (1, 1)
    degenerate: str | None = None
    kind: str = "power_law"
    fit: bool = True
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)

    def predict(self, x: Any) -> np.ndarray:
        """``(beta x)^alpha``."""
        return np.power(self.beta * np.asarray(x, dtype=float), self.alpha)

    def band(self, x: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise ``ci_level`` band of the fitted L at ``x`` over the bootstrap draws; None without draws."""
        if self.draws is None or len(self.draws) < 10:
            return None
        lx = np.log(np.asarray(x, dtype=float))
        curves = self.draws[:, :1] * lx[None, :] + self.draws[:, 1:]  # (draws, len(x)) log L
        q = (100 * (1 - self.ci_level) / 2, 100 * (1 + self.ci_level) / 2)
        lo, hi = np.percentile(curves, q, axis=0)
        return np.exp(lo), np.exp(hi)

    def equation(self, symbol: str = "L", x_symbol: str = "X") -> str:
        """E.g. ``L = (2.1e-05 X)^-0.131``."""
        return f"{symbol} = ({self.beta:.3g} {x_symbol})^{self.alpha:.3g}"

    def to_dict(self, symbol: str = "L", x_symbol: str = "X") -> dict[str, Any]:
        d = asdict(replace(self, draws=None))
        d["ci"] = {"alpha": _pair(self.alpha_ci), "beta": _pair(self.beta_ci), "level": self.ci_level,
                   "draws": self.ci_draws, "method": self.ci_method}
        for key in ("alpha_ci", "beta_ci", "ci_level", "ci_draws", "ci_method", "draws"):
            d.pop(key)
        d["seeds"] = {"min": self.seeds[0], "max": self.seeds[1]}
        d["equation"] = self.equation(symbol, x_symbol)
        return d


@dataclass(frozen=True)
class SaturatingFit:
    """``L = E + (X0 / X)^alpha``; ``rmse_log`` is the root-mean-square residual of log L."""

    E: float
    X0: float
    alpha: float
    n: int
    rmse_log: float
    x_min: float = 0.0
    x_max: float = 0.0
    points: int = 0
    seeds: tuple[int, int] = (1, 1)
    degenerate: str | None = None
    kind: str = "saturating"
    fit: bool = True

    def predict(self, x: Any) -> np.ndarray:
        """``E + (X0 / x)^alpha``."""
        return self.E + np.power(self.X0 / np.asarray(x, dtype=float), self.alpha)

    def equation(self, symbol: str = "L", x_symbol: str = "X") -> str:
        return f"{symbol} = {self.E:.3g} + ({self.X0:.3g} / {x_symbol})^{self.alpha:.3g}"

    def to_dict(self, symbol: str = "L", x_symbol: str = "X") -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = {"min": self.seeds[0], "max": self.seeds[1]}
        return {**d, "equation": self.equation(symbol, x_symbol)}


@dataclass(frozen=True)
class Unfit:
    """A fit that was not made, and why (e.g. fewer than 2 distinct X)."""

    reason: str
    n: int = 0
    kind: str = "power_law"
    fit: bool = False

    def to_dict(self, symbol: str = "L", x_symbol: str = "X") -> dict[str, Any]:
        return asdict(self)


FitResult = PowerLawFit | SaturatingFit | Unfit


def _pair(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [float(ci[0]), float(ci[1])]


def _as_points(x: Iterable[Any], y: Iterable[Any], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite, positive (x, y) as float arrays; otherwise :class:`ScalingError` naming the bad value."""
    xs, ys = list(x), list(y)
    if len(xs) != len(ys):
        raise ScalingError(f"{what}: {len(xs)} x values but {len(ys)} y values")
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        for name, v in (("x", xi), ("y", yi)):
            if v is None:
                raise ScalingError(f"{what}: point {i} has no {name} value (missing metric)")
            try:
                f = float(v)
            except (TypeError, ValueError):
                raise ScalingError(f"{what}: point {i} has a non-numeric {name}={v!r}") from None
            if not math.isfinite(f) or f <= 0:
                raise ScalingError(f"{what}: point {i} has {name}={v!r}; power laws need finite values > 0")
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def _line(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float] | None:
    """Least-squares slope and intercept of ``ly = slope lx + intercept``; None when x is constant."""
    dx = lx - lx.mean()
    sxx = float(dx @ dx)
    if sxx <= 1e-300:
        return None
    slope = float(dx @ (ly - ly.mean())) / sxx
    return slope, float(ly.mean() - slope * lx.mean())


def fit_power_law(x: Iterable[Any], y: Iterable[Any], *, clusters: Sequence[Hashable] | None = None,
                  n_boot: int = 1000, ci_level: float = 0.95, seed: int = 0, min_abs_r: float = MIN_ABS_R,
                  what: str = "power-law fit") -> PowerLawFit:
    """Fit ``L = (beta X)^alpha`` through every point: alpha = slope and beta = exp(intercept / alpha) of
    the least-squares line of log L on log X; r = Pearson correlation of (log X, log L).

    ``clusters[i]`` names the scaling point of run i (runs of one point differ only in their seed).
    The ``ci_level`` intervals are percentiles over ``n_boot`` bootstrap resamples (fixed ``seed``):
    when some point has several runs, each point's runs are drawn with replacement and every point is
    kept (``ci_method="seeds"``); otherwise the points are drawn with replacement (``"points"``, none
    with fewer than 3 points). ``degenerate`` says why the fit is no law: fewer than
    :data:`MIN_POINTS` distinct x, ``|r| < min_abs_r``, or an alpha interval that includes 0.

    Raises :class:`ScalingError` for missing/non-positive values, fewer than 2 distinct X, or a
    constant L (alpha = 0 leaves beta undefined)."""
    xs, ys = _as_points(x, y, what)
    lx, ly = np.log(xs), np.log(ys)
    line = _line(lx, ly)
    n_x = len(np.unique(xs))
    if n_x < 2 or line is None:
        raise ScalingError(f"{what}: needs at least 2 distinct x values, got {n_x} ({len(xs)} point(s))")
    slope, intercept = line
    sy = float(np.std(ly))
    if abs(slope) < 1e-12 or sy < 1e-12:
        raise ScalingError(f"{what}: the metric does not change with x (alpha = 0, beta undefined)")
    r = float(np.corrcoef(lx, ly)[0, 1])
    beta = math.exp(intercept / slope)
    members = _members(clusters if clusters is not None else list(xs), len(xs), what)
    sizes = [len(m) for m in members]
    method = None
    if n_boot > 0 and max(sizes) > 1 and len(members) >= 2:
        method, draws = "seeds", _cluster_bootstrap(lx, ly, members, n_boot, seed)
    elif n_boot > 0 and len(xs) >= 3:
        method, draws = "points", _bootstrap(lx, ly, n_boot, seed)
    else:
        draws = np.zeros((0, 2))
    alpha_ci = beta_ci = None
    if method is not None and len(draws) >= max(10, n_boot // 2):
        q = (100 * (1 - ci_level) / 2, 100 * (1 + ci_level) / 2)
        alpha_ci = tuple(float(v) for v in np.percentile(draws[:, 0], q))
        beta_ci = tuple(float(v) for v in np.percentile(np.exp(draws[:, 1] / draws[:, 0]), q))
    else:
        method, draws = None, None
    why = []
    if n_x < MIN_POINTS:
        why.append(f"only {n_x} distinct x: a line through them is exact, not a tested law")
    if abs(r) < min_abs_r:
        why.append(f"|r| = {abs(r):.2f} < {min_abs_r:g}: no power-law trend")
    if alpha_ci is not None and alpha_ci[0] <= 0 <= alpha_ci[1]:
        why.append(f"the alpha interval [{alpha_ci[0]:.3g}, {alpha_ci[1]:.3g}] includes 0")
    return PowerLawFit(alpha=float(slope), beta=float(beta), r=r, n=len(xs), x_min=float(xs.min()),
                       x_max=float(xs.max()), alpha_ci=alpha_ci, beta_ci=beta_ci, ci_level=ci_level,
                       ci_draws=0 if draws is None else len(draws), ci_method=method, points=len(members),
                       seeds=(min(sizes), max(sizes)), degenerate="; ".join(why) or None, draws=draws)


def _members(clusters: Sequence[Hashable], n: int, what: str) -> list[np.ndarray]:
    """Indices of the runs of each scaling point, in order of first appearance."""
    if len(clusters) != n:
        raise ScalingError(f"{what}: {len(clusters)} cluster labels for {n} points")
    index: dict[Hashable, list[int]] = {}
    for i, c in enumerate(clusters):
        index.setdefault(c, []).append(i)
    return [np.asarray(v) for v in index.values()]


def _keep_draw(line: tuple[float, float] | None) -> bool:
    """A resample's line is usable when alpha != 0 and beta = exp(intercept / alpha) does not overflow."""
    return line is not None and abs(line[0]) >= 1e-12 and abs(line[1] / line[0]) <= 700


def _bootstrap(lx: np.ndarray, ly: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(slope, intercept) of each resample (points drawn with replacement) with 2+ distinct x and alpha != 0."""
    rng = np.random.default_rng(seed)
    n = len(lx)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        line = _line(lx[idx], ly[idx])
        if _keep_draw(line):
            out.append(line)
    return np.asarray(out, dtype=float).reshape(-1, 2)


def _cluster_bootstrap(lx: np.ndarray, ly: np.ndarray, members: Sequence[np.ndarray], n_boot: int,
                       seed: int) -> np.ndarray:
    """(slope, intercept) of each resample that keeps every scaling point and draws its runs (seeds)
    with replacement."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        line = _line(lx[idx], ly[idx])
        if _keep_draw(line):
            out.append(line)
    return np.asarray(out, dtype=float).reshape(-1, 2)


def fit_saturating(x: Iterable[Any], y: Iterable[Any], *, min_abs_r: float = MIN_ABS_R,
                   what: str = "saturating fit") -> SaturatingFit:
    """Fit ``L = E + (X0 / X)^alpha`` (0 <= E <= min L, 1e-6 <= alpha <= 10) by least squares on log L with
    ``scipy.optimize.curve_fit``, parametrised by (E, log X0, alpha) and started from the power law
    of L - min(L)/2. Needs at least 4 points over 2+ distinct X and a metric that decreases with X.
    The fit is ``degenerate`` when a parameter ends on its bound (E below 1% of min L: no floor in the
    points) or the points show no trend (log-log ``|r| < min_abs_r``)."""

    xs, ys = _as_points(x, y, what)
    if len(np.unique(xs)) < 2 or len(xs) < 4:
        raise ScalingError(f"{what}: needs at least 4 points over 2+ distinct x values (3 parameters), "
                           f"got {len(xs)} point(s) over {len(np.unique(xs))} x value(s)")
    lx, ly = np.log(xs), np.log(ys)
    line = _line(lx, ly)
    if line is None or line[0] >= 0:
        raise ScalingError(f"{what}: the metric does not decrease with x, so it has no floor E to fit")
    e0 = 0.5 * float(ys.min())
    start = _line(lx, np.log(ys - e0))
    a0 = max(1e-3, -start[0]) if start else 0.5
    lx00 = -start[1] / start[0] if start else float(lx.min())
    a_bounds = (1e-6, 10.0)

    def model(lxv: np.ndarray, e: float, lx0: float, a: float) -> np.ndarray:
        return np.log(e + np.exp(np.clip(a * (lx0 - lxv), -700, 700)))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            p, _ = curve_fit(model, lx, ly, p0=[e0, lx00, a0], maxfev=20000,
                             bounds=([0.0, -np.inf, a_bounds[0]], [float(ys.min()), np.inf, a_bounds[1]]))
    except (RuntimeError, ValueError, OptimizeWarning) as e:
        raise ScalingError(f"{what}: the optimiser did not converge ({e})") from None
    e_fit, lx0_fit, a_fit = (float(v) for v in p)
    resid = ly - model(lx, e_fit, lx0_fit, a_fit)
    if not all(math.isfinite(v) for v in (e_fit, lx0_fit, a_fit)) or lx0_fit > 700:
        raise ScalingError(f"{what}: the fit diverged (E={e_fit}, log X0={lx0_fit}, alpha={a_fit})")
    why = []
    y_min = float(ys.min())
    r = float(np.corrcoef(lx, ly)[0, 1])
    if abs(r) < min_abs_r:
        why.append(f"|r| = {abs(r):.2f} < {min_abs_r:g}: no trend to saturate")
    if e_fit <= 1e-2 * y_min:
        why.append(f"E = {e_fit:.2g} at its bound 0 (< 1% of the smallest value): no floor in these points")
    elif e_fit >= (1 - 1e-4) * y_min:
        why.append(f"E = {e_fit:.3g} at its bound, the smallest value: the best point taken for the floor")
    if not a_bounds[0] * 1.01 < a_fit < a_bounds[1] * 0.99:
        why.append(f"alpha = {a_fit:.3g} on its bound ({a_bounds[0]:g} or {a_bounds[1]:g})")
    members = _members(list(xs), len(xs), what)
    return SaturatingFit(E=e_fit, X0=math.exp(lx0_fit), alpha=a_fit, n=len(xs),
                         rmse_log=float(np.sqrt(np.mean(resid ** 2))), x_min=float(xs.min()),
                         x_max=float(xs.max()), points=len(members), degenerate="; ".join(why) or None)


def lower_envelope(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the compute-optimal frontier: sorted by x, each point whose y is below every point
    with smaller (or equal) x; i.e. the lower envelope min_{x' <= x} y(x')."""
    order = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    keep, best = [], math.inf
    for i in order:
        if y[i] < best:
            keep.append(i)
            best = y[i]
    return keep


@dataclass(frozen=True)
class Point:
    """One scaling point: the runs (seeds) that share ``key``; mean and std (ddof 0) of x and y over them."""

    key: Hashable
    x: float
    y: float
    y_std: float
    seeds: int
    runs: tuple[int, ...]  # indices into the rows given to :func:`scaling_points`


def point_key(row: Mapping[str, Any], keys: Sequence[str] | None, x: str) -> Hashable:
    """The scaling point of ``row``: its values of ``keys`` (runs that differ only in their seed share
    it), or its x value when no keys are given or the row has none of them."""
    key = tuple(row.get(k) for k in keys or ())
    return key if any(v is not None for v in key) else row.get(x)


def scaling_points(rows: Sequence[Mapping[str, Any]], metric: str, x: str, *,
                   point_keys: Sequence[str] | None = None, seed_key: str = "seed") -> list[Point]:
    """Group ``rows`` (all with positive ``metric`` and ``x``) into scaling points, sorted by x."""
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(point_key(r, point_keys, x), []).append(i)
    out = []
    for key, idx in groups.items():
        ys = np.array([float(rows[i][metric]) for i in idx])
        out.append(Point(key=key, x=float(np.mean([float(rows[i][x]) for i in idx])), y=float(ys.mean()),
                         y_std=float(ys.std()), seeds=len({rows[i].get(seed_key) for i in idx}), runs=tuple(idx)))
    return sorted(out, key=lambda p: (p.x, p.y))


def frontier_points(points: Sequence[Point]) -> list[Point]:
    """The points on the lower envelope of their mean y against x."""
    return [points[i] for i in lower_envelope([p.x for p in points], [p.y for p in points])]


def fit_groups(rows: Sequence[Mapping[str, Any]], metric: str, x: str, *, group_by: str = "paradigm",
               point_keys: Sequence[str] | None = None, seed_key: str = "seed", frontier: bool = False,
               saturating: bool = False, n_boot: int = 1000, seed: int = 0, min_abs_r: float = MIN_ABS_R,
               ) -> dict[str, dict[str, FitResult]]:
    """Per ``row[group_by]``: the power law of ``row[metric]`` on ``row[x]`` through every run
    (``"power_law"``) and, when asked, through the runs of the points on the lower envelope of the
    per-point means (``"frontier"``) and the saturating law (``"saturating"``).

    Runs equal on ``point_keys`` are seeds of one scaling point (None: runs at equal x); the seed count
    per point (distinct ``row[seed_key]``) is recorded in each fit. Rows lacking the metric or x are
    left out; a group that cannot be fitted gets an :class:`Unfit`."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(group_by)), []).append(row)
    out: dict[str, dict[str, FitResult]] = {}
    for name, members in groups.items():
        usable = [r for r in members if _positive(r.get(x)) and _positive(r.get(metric))]
        what = f"{group_by}={name}: {metric} vs {x}"
        res: dict[str, FitResult] = {}
        if not usable:
            missing = [k for k in (metric, x) if not any(_positive(r.get(k)) for r in members)]
            reason = (f"{what}: no run has a positive {' or '.join(missing) or 'pair of values'} "
                      f"({len(members)} run(s))")
            res["power_law"] = Unfit(reason, 0)
            out[name] = res
            continue
        points = scaling_points(usable, metric, x, point_keys=point_keys, seed_key=seed_key)
        opts = {"n_boot": n_boot, "seed": seed, "min_abs_r": min_abs_r}
        res["power_law"] = _fit_points(fit_power_law, usable, points, metric, x, what, **opts)
        if frontier:
            res["frontier"] = _fit_points(fit_power_law, usable, frontier_points(points), metric, x,
                                          what + " (frontier)", **opts)
        if saturating:
            res["saturating"] = _fit_points(fit_saturating, usable, points, metric, x, what + " (saturating)",
                                            min_abs_r=min_abs_r)
        out[name] = res
    return out


def _fit_points(fn: Any, rows: Sequence[Mapping[str, Any]], points: Sequence[Point], metric: str, x: str,
                what: str, **kw: Any) -> FitResult:
    """``fn`` through every run of ``points`` (an :class:`Unfit` carrying its :class:`ScalingError`), with
    the points' seed counts recorded."""
    idx = [i for p in points for i in p.runs]
    xs = [float(rows[i][x]) for i in idx]
    ys = [float(rows[i][metric]) for i in idx]
    if fn is fit_power_law:
        kw["clusters"] = [k for p in points for k in [p.key] * len(p.runs)]
    try:
        fit = fn(xs, ys, what=what, **kw)
    except ScalingError as e:
        return Unfit(str(e), len(xs), "saturating" if fn is fit_saturating else "power_law")
    counts = [p.seeds for p in points]
    return replace(fit, points=len(points), seeds=(min(counts), max(counts)))


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

"""Power-law fits of a metric L against a scaling coordinate X (parameters, training compute, ...).

Pure power law (VAR's convention): ``L = (beta X)^alpha``, i.e. the straight line
``log L = alpha log X + alpha log beta`` fitted by least squares in log-log space; Pearson r is taken
in log-log space too. Saturating law: ``L = E + (X0 / X)^alpha`` (E: the irreducible part).

Fits never return NaN: bad input raises :class:`ScalingError` (``fit_power_law``) or, in
:func:`fit_groups`, becomes an :class:`Unfit` that carries the reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from genarena.errors import GenArenaError


class ScalingError(GenArenaError):
    """Runs that cannot be collected, or points that cannot be fitted, with the reason."""


@dataclass(frozen=True)
class PowerLawFit:
    """``L = (beta X)^alpha`` with Pearson r in log-log space and bootstrap intervals."""

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
    kind: str = "power_law"
    fit: bool = True

    def predict(self, x: Any) -> np.ndarray:
        """``(beta x)^alpha``."""
        return np.power(self.beta * np.asarray(x, dtype=float), self.alpha)

    def equation(self, symbol: str = "L") -> str:
        """E.g. ``L = (2.1e-05 X)^-0.131``."""
        return f"{symbol} = ({self.beta:.3g} X)^{self.alpha:.3g}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = {"alpha": _pair(self.alpha_ci), "beta": _pair(self.beta_ci), "level": self.ci_level,
                   "draws": self.ci_draws}
        for key in ("alpha_ci", "beta_ci", "ci_level", "ci_draws"):
            d.pop(key)
        d["equation"] = self.equation()
        return d


@dataclass(frozen=True)
class SaturatingFit:
    """``L = E + (X0 / X)^alpha``; ``rmse_log`` is the root-mean-square residual of log L."""

    E: float
    X0: float
    alpha: float
    n: int
    rmse_log: float
    kind: str = "saturating"
    fit: bool = True

    def predict(self, x: Any) -> np.ndarray:
        """``E + (X0 / x)^alpha``."""
        return self.E + np.power(self.X0 / np.asarray(x, dtype=float), self.alpha)

    def equation(self, symbol: str = "L") -> str:
        return f"{symbol} = {self.E:.3g} + ({self.X0:.3g} / X)^{self.alpha:.3g}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "equation": self.equation()}


@dataclass(frozen=True)
class Unfit:
    """A fit that was not made, and why (e.g. fewer than 2 distinct X)."""

    reason: str
    n: int = 0
    kind: str = "power_law"
    fit: bool = False

    def to_dict(self) -> dict[str, Any]:
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


def fit_power_law(x: Iterable[Any], y: Iterable[Any], *, n_boot: int = 1000, ci_level: float = 0.95,
                  seed: int = 0, what: str = "power-law fit") -> PowerLawFit:
    """Fit ``L = (beta X)^alpha``: alpha = slope and beta = exp(intercept / alpha) of the least-squares
    line of log L on log X; r = Pearson correlation of (log X, log L). The 95% intervals are percentiles
    over ``n_boot`` bootstrap resamples of the points (fixed ``seed``; none with fewer than 3 points).

    Raises :class:`ScalingError` for missing/non-positive values, fewer than 2 distinct X, or a
    constant L (alpha = 0 leaves beta undefined)."""
    xs, ys = _as_points(x, y, what)
    lx, ly = np.log(xs), np.log(ys)
    line = _line(lx, ly)
    if len(np.unique(xs)) < 2 or line is None:
        raise ScalingError(f"{what}: needs at least 2 distinct x values, got {len(np.unique(xs))} "
                           f"({len(xs)} point(s))")
    slope, intercept = line
    sy = float(np.std(ly))
    if abs(slope) < 1e-12 or sy < 1e-12:
        raise ScalingError(f"{what}: the metric does not change with x (alpha = 0, beta undefined)")
    r = float(np.corrcoef(lx, ly)[0, 1])
    beta = math.exp(intercept / slope)
    alpha_ci = beta_ci = None
    draws = 0
    if n_boot > 0 and len(xs) >= 3:
        alphas, betas = _bootstrap(lx, ly, n_boot, seed)
        draws = len(alphas)
        if draws >= max(10, n_boot // 2):
            q = (100 * (1 - ci_level) / 2, 100 * (1 + ci_level) / 2)
            alpha_ci = tuple(float(v) for v in np.percentile(alphas, q))
            beta_ci = tuple(float(v) for v in np.percentile(betas, q))
    return PowerLawFit(alpha=float(slope), beta=float(beta), r=r, n=len(xs), x_min=float(xs.min()),
                       x_max=float(xs.max()), alpha_ci=alpha_ci, beta_ci=beta_ci, ci_level=ci_level,
                       ci_draws=draws)


def _bootstrap(lx: np.ndarray, ly: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of each resample (points drawn with replacement) with 2+ distinct x and alpha != 0."""
    rng = np.random.default_rng(seed)
    n = len(lx)
    alphas, betas = [], []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        line = _line(lx[idx], ly[idx])
        if line is None or abs(line[0]) < 1e-12:
            continue
        b = line[1] / line[0]
        if abs(b) > 700:  # exp overflow: beta is not meaningful for this resample
            continue
        alphas.append(line[0])
        betas.append(math.exp(b))
    return np.asarray(alphas), np.asarray(betas)


def fit_saturating(x: Iterable[Any], y: Iterable[Any], *, what: str = "saturating fit") -> SaturatingFit:
    """Fit ``L = E + (X0 / X)^alpha`` (E >= 0, alpha > 0) by least squares on log L with
    ``scipy.optimize.curve_fit``, parametrised by (E, log X0, alpha) and started from the power law
    of L - min(L)/2. Needs at least 4 points over 2+ distinct X and a metric that decreases with X."""
    from scipy.optimize import OptimizeWarning, curve_fit

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

    def model(lxv: np.ndarray, e: float, lx0: float, a: float) -> np.ndarray:
        return np.log(e + np.exp(np.clip(a * (lx0 - lxv), -700, 700)))

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            p, _ = curve_fit(model, lx, ly, p0=[e0, lx00, a0], maxfev=20000,
                             bounds=([0.0, -np.inf, 1e-6], [float(ys.min()), np.inf, 10.0]))
    except (RuntimeError, ValueError, OptimizeWarning) as e:
        raise ScalingError(f"{what}: the optimiser did not converge ({e})") from None
    e_fit, lx0_fit, a_fit = (float(v) for v in p)
    resid = ly - model(lx, e_fit, lx0_fit, a_fit)
    if not all(math.isfinite(v) for v in (e_fit, lx0_fit, a_fit)) or lx0_fit > 700:
        raise ScalingError(f"{what}: the fit diverged (E={e_fit}, log X0={lx0_fit}, alpha={a_fit})")
    return SaturatingFit(E=e_fit, X0=math.exp(lx0_fit), alpha=a_fit, n=len(xs),
                         rmse_log=float(np.sqrt(np.mean(resid ** 2))))


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


def fit_groups(rows: Sequence[Mapping[str, Any]], metric: str, x: str, *, group_by: str = "paradigm",
               frontier: bool = False, saturating: bool = False, n_boot: int = 1000, seed: int = 0,
               ) -> dict[str, dict[str, FitResult]]:
    """Per ``row[group_by]``: the power law of ``row[metric]`` on ``row[x]`` (``"power_law"``) and, when
    asked, on the lower envelope only (``"frontier"``) and the saturating law (``"saturating"``).
    Rows lacking the metric or x are left out; a group that cannot be fitted gets an :class:`Unfit`."""
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
        else:
            xs = [float(r[x]) for r in usable]
            ys = [float(r[metric]) for r in usable]
            boot = {"n_boot": n_boot, "seed": seed}
            res["power_law"] = _try(fit_power_law, xs, ys, what=what, **boot)
            if frontier:
                idx = lower_envelope(xs, ys)
                res["frontier"] = _try(fit_power_law, [xs[i] for i in idx], [ys[i] for i in idx],
                                       what=what + " (frontier)", **boot)
            if saturating:
                res["saturating"] = _try(fit_saturating, xs, ys, what=what + " (saturating)")
        out[name] = res
    return out


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _try(fn: Any, x: list[float], y: list[float], **kw: Any) -> FitResult:
    """``fn(x, y, **kw)``, or an :class:`Unfit` carrying its :class:`ScalingError`."""
    try:
        return fn(x, y, **kw)
    except ScalingError as e:
        kind = "saturating" if fn is fit_saturating else "power_law"
        return Unfit(str(e), len(x), kind)

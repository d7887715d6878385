"""``genarena-scaling``: power-law fits and plots from a sweep's finished generator runs.

    genarena-scaling --runs runs/scaling_paradigms_mnist5k --sweep paradigms --saturating
    genarena-scaling --points experiments/scaling/paradigms_mnist5k/points.csv --compare-exponents
    genarena-scaling --source wandb --project genarena --group paradigms
    genarena-scaling --runs runs/scaling_paradigms_mnist5k --sweep paradigms --wandb   (tables + plots to W&B)

Inputs: run directories (--runs, every metrics.json below them), a points.csv this tool wrote
(--points: re-plots a study without its runs) or a W&B group (--source wandb). Runs of one scaling
point that differ only in their seed are all fitted; the bootstrap then resamples the seeds of each
point. Writes ``points.csv`` (one row per run), ``fits.json`` and ``fits.md`` (per paradigm, metric and
x: alpha, beta, r, 95% bootstrap CI, points x seeds, degenerate fits flagged), the plots (PNG + PDF)
and, with --compare-exponents, ``exponents.md`` / ``exponents.json`` into --out (default: the folder
of --points, else experiments/scaling/<sweep>), and prints the fits of --metric against --x. With --wandb
the fits and points tables and the plots also go to a W&B run ``scaling`` in the study's group.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genarena.cli.app import report_errors
from genarena.scaling.collect import (
    KEEP,
    POINT_COLUMNS,
    SCALING_POINT_KEYS,
    Collection,
    collect_local,
    collect_wandb,
    points_file,
    read_points,
    write_points,
)
from genarena.scaling.fit import (
    MIN_ABS_R,
    FitResult,
    PowerLawFit,
    SaturatingFit,
    ScalingError,
    fit_groups,
    frontier_points,
    scaling_points,
)
from genarena.scaling.plot import (
    PARADIGM_ORDER,
    axis_label,
    default_specs,
    metric_symbol,
    plot_all,
    x_symbol,
)

PROG = "genarena-scaling"
METRICS = ("val_loss_best", "val_loss", "val_loss_last", "val_loss_scale_mean", "val_token_error", "fid",
           "kid_mean")
X_KEYS = ("params_non_embedding", "params", "flops_train_total")
EXTRA_METRICS = ("val_token_error", "fid")  # also fitted (and plotted) whenever runs have them
SHOWN_SKIPPED = 20  # skipped runs (failed, running, unreadable) printed one per line, with the reason
FitTree = dict[str, dict[str, dict[str, dict[str, FitResult]]]]  # fits[metric][x][paradigm][kind]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=("local", "wandb"), default="local",
                   help="local files (run directories or --points; default) or the W&B API")
    p.add_argument("--runs", nargs="+", metavar="DIR",
                   help="run directories searched for metrics.json (default: $GENARENA_RUNS_DIR or runs/)")
    p.add_argument("--points", nargs="+", metavar="CSV",
                   help="points.csv file(s) written by genarena-scaling, instead of run directories")
    p.add_argument("--project", help="W&B project (--source wandb)")
    p.add_argument("--entity", help="W&B entity (default: your default entity)")
    p.add_argument("--group", help="W&B group (the sweep presets use the sweep name; default: --sweep)")
    p.add_argument("--sweep", help="keep only runs of this sweep (metrics.json 'sweep')")
    p.add_argument("--data", help="keep only runs on this data set")
    p.add_argument("--metric", choices=METRICS, default="val_loss_best",
                   help="the fitted metric (default: %(default)s)")
    p.add_argument("--x", choices=X_KEYS, default="params_non_embedding",
                   help="x of the printed table and the loss-vs-parameters plot (all x are fitted anyway)")
    p.add_argument("--out", help="output directory (default: the folder of --points, else "
                                 "experiments/scaling/<sweep or group or 'runs'>)")
    p.add_argument("--saturating", action="store_true", help="also fit L = E + (X0/X)^alpha")
    p.add_argument("--compare-exponents", action="store_true",
                   help="for each pair of paradigms, say whether their alpha intervals overlap "
                        "(exponents.md / exponents.json)")
    p.add_argument("--keep", choices=KEEP, default="newest",
                   help="re-runs of one point and seed (paradigm, data, depth, width, steps, batch, seed): "
                        "newest or all; runs with different seeds are always all kept")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap draws for the CIs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--min-r", type=float, default=MIN_ABS_R,
                   help="a power law with |r| below this is flagged degenerate and not drawn (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write points.csv and the fits only")
    p.add_argument("--wandb", action="store_true",
                   help="also log the fits and points as W&B tables and the plots as images, in a run 'scaling' "
                        "(job type scaling) of the study's W&B group; offline without an API key (files in "
                        "<out>/wandb/, `wandb sync` uploads them)")
    p.add_argument("--wandb-project", help="W&B project of --wandb (default: --project, else genarena)")
    p.add_argument("--wandb-entity", help="W&B entity of --wandb (default: --entity, else your default entity)")
    p.add_argument("--wandb-group", help="W&B group of --wandb (default: --group, else the sweep's name)")
    return p


def collect(args: argparse.Namespace) -> Collection:
    given = [f"--{k.replace('_', '-')}" for k in ("wandb_project", "wandb_entity", "wandb_group") if getattr(args, k)]
    if given and not args.wandb:
        raise ScalingError(f"{', '.join(given)}: these say where --wandb logs; add --wandb")
    if args.source == "wandb":
        if args.runs or args.points:
            raise ScalingError("--runs and --points are for --source local; with --source wandb give --project "
                               "and --group")
        if not args.project:
            raise ScalingError("--source wandb needs --project (and usually --group)")
        return collect_wandb(args.project, entity=args.entity, group=args.group or args.sweep,
                             sweep=args.sweep, data=args.data, keep=args.keep)
    if args.project or args.entity or args.group:
        raise ScalingError("--project/--entity/--group are for --source wandb")
    if args.points:
        if args.runs:
            raise ScalingError("give either --runs (run directories) or --points (points.csv files), not both")
        return read_points(args.points, sweep=args.sweep, data=args.data, keep=args.keep)
    dirs = args.runs or [os.environ.get("GENARENA_RUNS_DIR", "runs")]
    return collect_local(dirs, sweep=args.sweep, data=args.data, keep=args.keep)


def fit_all(runs: Sequence[Mapping[str, Any]], metric: str, *, saturating: bool, n_boot: int, seed: int,
            min_abs_r: float = MIN_ABS_R) -> FitTree:
    """``fits[metric][x][paradigm][kind]`` for the chosen metric and every extra metric present, against
    every x in :data:`X_KEYS` (FID also against sampling time); the frontier fit for compute. Runs of
    one scaling point (:data:`SCALING_POINT_KEYS`) with different seeds are fitted together."""
    has = lambda key: any(isinstance(r.get(key), (int, float)) for r in runs)
    if not has(metric):
        present = [m for m in METRICS if has(m)]
        raise ScalingError(f"no run has --metric {metric}; metrics present: {', '.join(present) or 'none'}")
    fits: FitTree = {}
    for m in dict.fromkeys([metric, *EXTRA_METRICS]):
        if not has(m):
            continue
        xs = [*X_KEYS, "sample_s_per_image"] if m == "fid" else list(X_KEYS)
        fits[m] = {x: fit_groups(runs, m, x, point_keys=SCALING_POINT_KEYS, frontier=x == "flops_train_total",
                                 saturating=saturating, n_boot=n_boot, seed=seed, min_abs_r=min_abs_r)
                   for x in xs if has(x)}
    return fits


def fits_to_json(fits: Mapping[str, Mapping[str, Mapping[str, Mapping[str, FitResult]]]]) -> dict[str, Any]:
    """Re-key as ``paradigm -> metric -> x -> kind -> fit dict`` (equations with the metric's symbols)."""
    out: dict[str, Any] = {}
    for metric, per_x in fits.items():
        for x, per_paradigm in per_x.items():
            for paradigm, kinds in per_paradigm.items():
                entry = {kind: fit.to_dict(metric_symbol(metric), x_symbol(x)) for kind, fit in kinds.items()}
                out.setdefault(paradigm, {}).setdefault(metric, {})[x] = entry
    return out


def flagged(fits: FitTree) -> list[dict[str, Any]]:
    """Every fit that was made but is degenerate, or could not be made, with the reason."""
    out = []
    for metric, per_x in fits.items():
        for x, per_paradigm in per_x.items():
            for paradigm, kinds in per_paradigm.items():
                for kind, f in kinds.items():
                    reason = getattr(f, "degenerate", None) or getattr(f, "reason", None)
                    if reason:
                        out.append({"paradigm": paradigm, "metric": metric, "x": x, "kind": kind,
                                    "fitted": bool(f.fit), "reason": reason})
    return out


def mark_frontier(runs: Sequence[dict[str, Any]], metric: str) -> None:
    """``on_frontier``: the run's scaling point lies on its paradigm's lower envelope of ``metric`` (mean
    over seeds) vs training compute."""
    ok = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v < float("inf")
    for paradigm in {r.get("paradigm") for r in runs}:
        everyone = [r for r in runs if r.get("paradigm") == paradigm]
        mine = [r for r in everyone if ok(r.get(metric)) and ok(r.get("flops_train_total"))]
        points = scaling_points(mine, metric, "flops_train_total", point_keys=SCALING_POINT_KEYS)
        on = {id(mine[i]) for p in frontier_points(points) for i in p.runs}
        for r in everyone:
            r["on_frontier"] = id(r) in on if mine else None


def _seeds(f: PowerLawFit | SaturatingFit) -> str:
    lo, hi = f.seeds
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _ci(f: PowerLawFit) -> str:
    return f"[{f.alpha_ci[0]:.3g}, {f.alpha_ci[1]:.3g}]" if f.alpha_ci else "none"


def format_table(per_paradigm: Mapping[str, Mapping[str, FitResult]], kind: str = "power_law") -> list[str]:
    """The printed table: runs, points x seeds, alpha with its interval and what it resampled, beta, r and
    the flag of a degenerate fit."""
    lines = [f"  {'paradigm':<9}{'runs':>5}{'pts':>4}{'seeds':>6}  {'alpha':>8}  {'alpha 95% CI':<20}"
             f"{'CI over':<8}{'beta':>10}  {'r':>7}  flag"]
    for paradigm, kinds in per_paradigm.items():
        f = kinds.get(kind)
        if isinstance(f, PowerLawFit):
            lines.append(f"  {paradigm:<9}{f.n:>5}{f.points:>4}{_seeds(f):>6}  {f.alpha:>8.4g}  {_ci(f):<20}"
                         f"{f.ci_method or '-':<8}{f.beta:>10.3g}  {f.r:>7.4f}  "
                         + (f"DEGENERATE: {f.degenerate}" if f.degenerate else "ok"))
        elif f is not None:
            lines.append(f"  {paradigm:<9}{f.n:>5}  no fit: {getattr(f, 'reason', '')}")
    return lines


def fits_markdown(fits: FitTree, metric: str, source: str) -> str:
    """``fits.md``: a table per (metric, x, kind): points x seeds, alpha and its interval, r, flag."""
    lines = [f"# Scaling fits ({source})", "",
             "Power law `y = (beta x)^alpha` fitted through every run in log-log space; 95% percentile "
             "bootstrap interval over the points (one seed per point) or over the seeds of each point "
             "(several). A degenerate fit is not drawn in the plots.", ""]
    for m in dict.fromkeys([metric, *fits]):
        for x, per_paradigm in fits.get(m, {}).items():
            kinds = dict.fromkeys(k for p in per_paradigm.values() for k in p)
            for kind in kinds:
                what = {"power_law": "power law", "frontier": "power law on the compute-optimal frontier",
                        "saturating": "saturating law `y = E + (x0 / x)^alpha`"}.get(kind, kind)
                lines += [f"## {axis_label(m)} vs {axis_label(x)}: {what}", ""]
                if kind == "saturating":
                    lines += ["| paradigm | runs | points x seeds | E | x0 | alpha | rmse (log) | flag |",
                              "|---|---|---|---|---|---|---|---|"]
                else:
                    lines += ["| paradigm | runs | points x seeds | alpha | 95% CI | CI over | r | flag |",
                              "|---|---|---|---|---|---|---|---|"]
                for paradigm, fs in per_paradigm.items():
                    f = fs.get(kind)
                    if isinstance(f, PowerLawFit):
                        lines.append(f"| `{paradigm}` | {f.n} | {f.points} x {_seeds(f)} | {f.alpha:.4g} | {_ci(f)} "
                                     f"| {f.ci_method or '-'} | {f.r:.4f} | {f.degenerate or 'ok'} |")
                    elif isinstance(f, SaturatingFit):
                        lines.append(f"| `{paradigm}` | {f.n} | {f.points} x {_seeds(f)} | {f.E:.3g} | {f.X0:.3g} "
                                     f"| {f.alpha:.3g} | {f.rmse_log:.2g} | {f.degenerate or 'ok'} |")
                    elif f is not None:
                        lines.append(f"| `{paradigm}` | {f.n} | | | | | | no fit: {f.reason} |")
                lines.append("")
    return "\n".join(lines)


def compare_exponents(per_paradigm: Mapping[str, Mapping[str, FitResult]], kind: str = "power_law",
                      ) -> list[dict[str, Any]]:
    """For each pair of paradigms: ``differ`` when their alpha intervals are disjoint, ``overlap`` when
    they share a value, ``n/a`` when either has no interval (why in ``note``)."""
    order = list(per_paradigm)
    rows = []
    for a, b in itertools.combinations(order, 2):
        fa, fb = per_paradigm[a].get(kind), per_paradigm[b].get(kind)
        row: dict[str, Any] = {"a": a, "b": b}
        for side, f in (("a", fa), ("b", fb)):
            ok = isinstance(f, PowerLawFit)
            row[f"alpha_{side}"] = f.alpha if ok else None
            row[f"ci_{side}"] = list(f.alpha_ci) if ok and f.alpha_ci else None
            row[f"seeds_{side}"] = list(f.seeds) if ok else None
        missing = [p for p, side in ((a, "a"), (b, "b")) if row[f"ci_{side}"] is None]
        notes = [f"{p}: degenerate fit ({f.degenerate})" for p, f in ((a, fa), (b, fb))
                 if isinstance(f, PowerLawFit) and f.degenerate]
        if missing:
            row["verdict"] = "n/a"
            notes.insert(0, f"no alpha interval for {' and '.join(missing)}")
        else:
            (la, ha), (lb, hb) = row["ci_a"], row["ci_b"]
            row["verdict"] = "differ" if ha < lb or hb < la else "overlap"
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def exponents_report(fits: FitTree, metric: str, x: str) -> tuple[dict[str, Any], str, list[str]]:
    """(``exponents.json``, ``exponents.md``, the printed lines): the pairwise comparison for every fitted
    (metric, x), the chosen one first."""
    sections = []
    for m in dict.fromkeys([metric, *fits]):
        xs = list(dict.fromkeys([x, *fits.get(m, {})])) if m == metric else list(fits.get(m, {}))
        for xi in xs:
            if xi in fits.get(m, {}):
                sections.append({"metric": m, "x": xi, "kind": "power_law",
                                 "pairs": compare_exponents(fits[m][xi])})
    rule = ("two exponents differ when their 95% bootstrap intervals are disjoint; overlapping intervals "
            "do not show a difference (a conservative rule)")
    md = ["# Do the paradigms' exponents differ?", "", rule[0].upper() + rule[1:] + ".", ""]
    for sec in sections:
        md += [f"## {axis_label(sec['metric'])} vs {axis_label(sec['x'])}", "",
               "| paradigms | alpha (95% CI) | alpha (95% CI) | verdict | note |", "|---|---|---|---|---|"]
        md += [f"| `{p['a']}` vs `{p['b']}` | {_alpha_ci(p, 'a')} | {_alpha_ci(p, 'b')} | **{p['verdict']}** "
               f"| {p['note']} |" for p in sec["pairs"]]
        md.append("")
    first = sections[0] if sections else {"metric": metric, "x": x, "pairs": []}
    printed = [f"exponents of {first['metric']} vs {first['x']}: {rule}"]
    printed += [f"  {p['a'] + ' vs ' + p['b']:<18}{_alpha_ci(p, 'a'):<28}{_alpha_ci(p, 'b'):<28}{p['verdict']}"
                + (f"  ({p['note']})" if p["note"] else "") for p in first["pairs"]]
    return {"rule": rule, "level": 0.95, "comparisons": sections}, "\n".join(md), printed


FIT_COLUMNS = ("paradigm", "metric", "x", "kind", "alpha", "alpha_lo", "alpha_hi", "beta", "r", "runs", "points",
               "seeds", "ci_over", "E", "x0", "rmse_log", "flag")


def fits_table(fits: FitTree) -> tuple[list[str], list[list[Any]]]:
    """Every fit as a row of :data:`FIT_COLUMNS` (a power law fills alpha..ci_over, a saturating law E, x0,
    alpha and rmse_log; ``flag`` is ``ok``, the reason a fit is degenerate, or why none was made)."""
    rows = []
    for metric, per_x in fits.items():
        for x, per_paradigm in per_x.items():
            for paradigm, kinds in per_paradigm.items():
                for kind, f in kinds.items():
                    row = dict.fromkeys(FIT_COLUMNS)
                    row.update(paradigm=paradigm, metric=metric, x=x, kind=kind, runs=f.n)
                    if isinstance(f, PowerLawFit):
                        lo, hi = f.alpha_ci or (None, None)
                        row.update(alpha=f.alpha, alpha_lo=lo, alpha_hi=hi, beta=f.beta, r=f.r, points=f.points,
                                   seeds=_seeds(f), ci_over=f.ci_method, flag=f.degenerate or "ok")
                    elif isinstance(f, SaturatingFit):
                        row.update(alpha=f.alpha, E=f.E, x0=f.X0, rmse_log=f.rmse_log, points=f.points,
                                   seeds=_seeds(f), flag=f.degenerate or "ok")
                    else:
                        row.update(flag=f"no fit: {getattr(f, 'reason', '')}")
                    rows.append([row[c] for c in FIT_COLUMNS])
    return list(FIT_COLUMNS), rows


def log_to_wandb(args: argparse.Namespace, report: Mapping[str, Any], fits: FitTree, runs: Sequence[Mapping[str, Any]],
                 plots: Sequence[Path], out: Path) -> str | None:
    """--wandb: a run ``scaling`` (job type ``scaling``) of the study's group with the tables ``fits`` and
    ``points`` and every plot (PNG) as an image; returns its id (None when W&B failed: one warning)."""
    from genarena.lit.wandb_results import log_study  # lazy: Lightning and W&B load only when --wandb asks

    group = args.wandb_group or args.group or report["sweep"]
    tables = {"fits": fits_table(fits),
              "points": (list(POINT_COLUMNS), [[r.get(c) for c in POINT_COLUMNS] for r in runs])}
    images = {f"plots/{p.stem}": p for p in plots if p.suffix == ".png"}
    config = {k: v for k, v in vars(args).items() if v is not None}
    summary = {"metric": report["metric"], "x": report["x"], "n_runs": report["n_runs"],
               "flagged": sum(1 for f in report["flagged"] if f["fitted"])}
    tags = ["scaling", report["data"], *([report["sweep"]] if report["sweep"] else [])]
    return log_study("auto", project=args.wandb_project or args.project or "genarena",
                     entity=args.wandb_entity or args.entity, group=group, name="scaling", job_type="scaling",
                     tags=tags, config=config, directory=out, tables=tables, images=images, summary=summary)


def _alpha_ci(pair: Mapping[str, Any], side: str) -> str:
    alpha, ci = pair[f"alpha_{side}"], pair[f"ci_{side}"]
    if alpha is None:
        return "no fit"
    return f"{alpha:.3g} " + (f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "(no CI)")


def _one(runs: Sequence[Mapping[str, Any]], key: str) -> str | None:
    values = {r.get(key) for r in runs if r.get(key) is not None}
    return str(values.pop()) if len(values) == 1 else None


def default_out(args: argparse.Namespace, runs: Sequence[Mapping[str, Any]]) -> Path:
    if args.out:
        return Path(args.out)
    if args.points:
        return points_file(args.points[0]).parent
    return Path("experiments") / "scaling" / (args.sweep or args.group or _one(runs, "sweep") or "runs")


def run(args: argparse.Namespace) -> dict[str, Any]:
    col = collect(args)
    print(col.summary())
    for where, why in col.skipped[:SHOWN_SKIPPED]:  # a failed run is refused, saying why
        print(f"  skipped {where}: {why}")
    if len(col.skipped) > SHOWN_SKIPPED:
        print(f"  ... and {len(col.skipped) - SHOWN_SKIPPED} more (fits.json lists them all)")
    if not col.runs:
        why = "; ".join(f"{where}: {reason}" for where, reason in col.skipped[:3])
        raise ScalingError(f"no finished generator runs to fit ({col.summary()})" + (f"; {why}" if why else ""))
    rank = {name: i for i, name in enumerate(PARADIGM_ORDER)}
    col.runs.sort(key=lambda r: rank.get(str(r.get("paradigm")), len(rank)))  # stable: var, ar, maskgit, mar
    datasets = sorted({str(r.get("data")) for r in col.runs})
    if len(datasets) > 1:
        raise ScalingError(f"the runs span several data sets ({', '.join(datasets)}); pick one with --data")
    fits = fit_all(col.runs, args.metric, saturating=args.saturating, n_boot=args.bootstrap, seed=args.seed,
                   min_abs_r=args.min_r)
    mark_frontier(col.runs, args.metric)
    out = default_out(args, col.runs)
    out.mkdir(parents=True, exist_ok=True)
    write_points(col.runs, out / "points.csv")
    sweep = args.sweep or _one(col.runs, "sweep")
    seeds = sorted({r.get("seed") for r in col.runs if r.get("seed") is not None}, key=str)
    report = {"metric": args.metric, "x": args.x, "law": f"{metric_symbol(args.metric)} = (beta X)^alpha",
              "source": col.source, "sweep": sweep, "data": datasets[0], "n_runs": len(col.runs), "seeds": seeds,
              "bootstrap": {"draws": args.bootstrap, "level": 0.95, "seed": args.seed,
                            "over": "the points (one seed per point) or the seeds of each point (several)"},
              "degenerate_rule": {"min_points": 3, "min_abs_r": args.min_r, "alpha_ci_excludes_0": True,
                                  "saturating": "no parameter on its bound"},
              "flagged": flagged(fits),
              "skipped": [{"run": r, "reason": why} for r, why in col.skipped], "fits": fits_to_json(fits)}
    (out / "fits.json").write_text(json.dumps(report, indent=2))
    (out / "fits.md").write_text(fits_markdown(fits, args.metric, col.source))
    written = [out / "points.csv", out / "fits.json", out / "fits.md"]
    if args.compare_exponents:
        exp_json, exp_md, printed = exponents_report(fits, args.metric, args.x)
        (out / "exponents.json").write_text(json.dumps(exp_json, indent=2))
        (out / "exponents.md").write_text(exp_md)
        written += [out / "exponents.json", out / "exponents.md"]
    params_key = args.x if args.x.startswith("params") else "params_non_embedding"
    title = datasets[0] + (f", sweep {sweep}" if sweep else "")
    specs = default_specs(args.metric, params_key)
    plots = [] if args.no_plots else plot_all(col.runs, fits, out, specs, title, SCALING_POINT_KEYS)
    print(f"fitted metric: {args.metric} vs {args.x}   {metric_symbol(args.metric)} = (beta X)^alpha, "
          f"95% bootstrap CI ({args.bootstrap} draws)")
    print("\n".join(format_table(fits[args.metric].get(args.x, {}))))
    if args.x != "flops_train_total" and "flops_train_total" in fits[args.metric]:
        print(f"{args.metric} vs flops_train_total, fitted on the compute-optimal frontier")
        print("\n".join(format_table(fits[args.metric]["flops_train_total"], "frontier")))
    if args.compare_exponents:
        print("\n".join(printed))
    if args.wandb:
        run_id = log_to_wandb(args, report, fits, col.runs, plots, out)
        print(f"W&B: logged the fits, points and {sum(p.suffix == '.png' for p in plots)} plot(s) to run {run_id}"
              if run_id else "W&B: nothing logged (see the warning above)")
    n_flagged = sum(1 for f in report["flagged"] if f["fitted"])
    if n_flagged:
        print(f"{n_flagged} degenerate fit(s) flagged in fits.json ('flagged') and not drawn")
    print(f"wrote {', '.join(p.name for p in written)} and {len(plots)} plot file(s) to {out}/")
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    logging.getLogger("genarena").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    report_errors(PROG, lambda: run(args))


if __name__ == "__main__":
    main()

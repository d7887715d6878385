"""``genarena-scaling``: power-law fits and plots from a sweep's finished generator runs.

    genarena-scaling --runs runs/scaling_depth_mnist5k --sweep depth
    genarena-scaling --runs runs/ --sweep compute --metric val_loss --x flops_train_total --saturating
    genarena-scaling --source wandb --project genarena --group paradigms

Writes ``points.csv`` (one row per run), ``fits.json`` (per paradigm, per metric and x: alpha, beta, r,
95% bootstrap CI, n) and the plots (PNG + PDF) into ``--out`` (default experiments/scaling/<sweep>),
and prints the fits of ``--metric`` against ``--x``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genarena.cli.app import report_errors
from genarena.scaling.collect import KEEP, Collection, collect_local, collect_wandb
from genarena.scaling.fit import FitResult, PowerLawFit, ScalingError, fit_groups, lower_envelope
from genarena.scaling.plot import default_specs, plot_all

PROG = "genarena-scaling"
METRICS = ("val_loss_best", "val_loss", "val_loss_last", "val_loss_scale_mean", "val_token_error", "fid",
           "kid_mean")
X_KEYS = ("params_non_embedding", "params", "flops_train_total")
EXTRA_METRICS = ("val_token_error", "fid")  # also fitted (and plotted) whenever runs have them
POINT_COLUMNS = (
    "paradigm", "data", "sweep", "depth", "width", "heads", "tokenizer", "params", "params_non_embedding",
    "tokens_per_image", "steps", "batch_size", "images_seen", "tokens_seen", "flops_train_per_image",
    "flops_train_total", "flops_sample_per_image", "sampling_steps", "train_time_s", "val_loss",
    "val_loss_best", "val_loss_best_step", "val_loss_last", "val_loss_scale_mean", "val_acc",
    "val_token_error", "fid", "isc_mean", "kid_mean", "precision", "recall", "class_acc",
    "sample_s_per_image", "eval_n", "eval_extractor", "on_frontier", "run",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", choices=("local", "wandb"), default="local",
                   help="local run directories (default) or the W&B API")
    p.add_argument("--runs", nargs="+", metavar="DIR",
                   help="run directories searched for metrics.json (default: $GENARENA_RUNS_DIR or runs/)")
    p.add_argument("--project", help="W&B project (--source wandb)")
    p.add_argument("--entity", help="W&B entity (default: your default entity)")
    p.add_argument("--group", help="W&B group (the sweep presets use the sweep name; default: --sweep)")
    p.add_argument("--sweep", help="keep only runs of this sweep (metrics.json 'sweep')")
    p.add_argument("--data", help="keep only runs on this data set")
    p.add_argument("--metric", choices=METRICS, default="val_loss_best",
                   help="the fitted metric (default: %(default)s)")
    p.add_argument("--x", choices=X_KEYS, default="params_non_embedding",
                   help="x of the printed table and the loss-vs-parameters plot (all x are fitted anyway)")
    p.add_argument("--out", help="output directory (default: experiments/scaling/<sweep or group or 'runs'>)")
    p.add_argument("--saturating", action="store_true", help="also fit L = E + (X0/X)^alpha")
    p.add_argument("--keep", choices=KEEP, default="newest",
                   help="re-runs of one point (paradigm, data, depth, width, steps, batch): newest or all")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap draws for the CIs (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write points.csv and fits.json only")
    return p


def collect(args: argparse.Namespace) -> Collection:
    if args.source == "wandb":
        if args.runs:
            raise ScalingError("--runs is for --source local; with --source wandb give --project and --group")
        if not args.project:
            raise ScalingError("--source wandb needs --project (and usually --group)")
        return collect_wandb(args.project, entity=args.entity, group=args.group or args.sweep,
                             sweep=args.sweep, data=args.data, keep=args.keep)
    if args.project or args.entity or args.group:
        raise ScalingError("--project/--entity/--group are for --source wandb")
    dirs = args.runs or [os.environ.get("GENARENA_RUNS_DIR", "runs")]
    return collect_local(dirs, sweep=args.sweep, data=args.data, keep=args.keep)


def fit_all(runs: Sequence[Mapping[str, Any]], metric: str, *, saturating: bool, n_boot: int, seed: int,
            ) -> dict[str, dict[str, dict[str, dict[str, FitResult]]]]:
    """``fits[metric][x][paradigm][kind]`` for the chosen metric and every extra metric present, against
    every x in :data:`X_KEYS` (FID also against sampling time); the frontier fit for compute."""
    has = lambda key: any(isinstance(r.get(key), (int, float)) for r in runs)
    if not has(metric):
        present = [m for m in METRICS if has(m)]
        raise ScalingError(f"no run has --metric {metric}; metrics present: {', '.join(present) or 'none'}")
    fits: dict[str, dict[str, dict[str, dict[str, FitResult]]]] = {}
    for m in dict.fromkeys([metric, *EXTRA_METRICS]):
        if not has(m):
            continue
        xs = [*X_KEYS, "sample_s_per_image"] if m == "fid" else list(X_KEYS)
        fits[m] = {x: fit_groups(runs, m, x, frontier=x == "flops_train_total", saturating=saturating,
                                 n_boot=n_boot, seed=seed) for x in xs if has(x)}
    return fits


def fits_to_json(fits: Mapping[str, Mapping[str, Mapping[str, Mapping[str, FitResult]]]]) -> dict[str, Any]:
    """Re-key as ``paradigm -> metric -> x -> kind -> fit dict``."""
    out: dict[str, Any] = {}
    for metric, per_x in fits.items():
        for x, per_paradigm in per_x.items():
            for paradigm, kinds in per_paradigm.items():
                entry = {kind: fit.to_dict() for kind, fit in kinds.items()}
                out.setdefault(paradigm, {}).setdefault(metric, {})[x] = entry
    return out


def mark_frontier(runs: Sequence[dict[str, Any]], metric: str) -> None:
    """``on_frontier``: the run lies on its paradigm's lower envelope of ``metric`` vs training compute."""
    ok = lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    for paradigm in {r.get("paradigm") for r in runs}:
        mine = [r for r in runs if r.get("paradigm") == paradigm and ok(r.get(metric))
                and ok(r.get("flops_train_total"))]
        idx = lower_envelope([r["flops_train_total"] for r in mine], [r[metric] for r in mine])
        on = {id(mine[i]) for i in idx}
        for r in runs:
            if r.get("paradigm") == paradigm:
                r["on_frontier"] = id(r) in on if mine else None


def write_points(runs: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(POINT_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in POINT_COLUMNS})


def format_table(per_paradigm: Mapping[str, Mapping[str, FitResult]], kind: str = "power_law") -> list[str]:
    lines = [f"  {'paradigm':<9}{'n':>3}  {'alpha':>8}  {'alpha 95% CI':<20}{'beta':>10}  {'r':>7}"]
    for paradigm, kinds in per_paradigm.items():
        f = kinds.get(kind)
        if isinstance(f, PowerLawFit):
            ci = f"[{f.alpha_ci[0]:.3g}, {f.alpha_ci[1]:.3g}]" if f.alpha_ci else "(n < 3: none)"
            lines.append(f"  {paradigm:<9}{f.n:>3}  {f.alpha:>8.4g}  {ci:<20}{f.beta:>10.3g}  {f.r:>7.4f}")
        elif f is not None:
            lines.append(f"  {paradigm:<9}{f.n:>3}  no fit: {getattr(f, 'reason', '')}")
    return lines


def run(args: argparse.Namespace) -> dict[str, Any]:
    col = collect(args)
    print(col.summary())
    if not col.runs:
        raise ScalingError(f"no finished generator runs to fit ({col.summary()})")
    datasets = sorted({str(r.get("data")) for r in col.runs})
    if len(datasets) > 1:
        raise ScalingError(f"the runs span several data sets ({', '.join(datasets)}); pick one with --data")
    fits = fit_all(col.runs, args.metric, saturating=args.saturating, n_boot=args.bootstrap, seed=args.seed)
    mark_frontier(col.runs, args.metric)
    out = Path(args.out or Path("experiments") / "scaling" / (args.sweep or args.group or "runs"))
    out.mkdir(parents=True, exist_ok=True)
    write_points(col.runs, out / "points.csv")
    report = {"metric": args.metric, "x": args.x, "law": "L = (beta X)^alpha", "source": col.source,
              "sweep": args.sweep, "data": datasets[0], "n_runs": len(col.runs),
              "bootstrap": {"draws": args.bootstrap, "level": 0.95, "seed": args.seed},
              "skipped": [{"run": r, "reason": why} for r, why in col.skipped], "fits": fits_to_json(fits)}
    (out / "fits.json").write_text(json.dumps(report, indent=2))
    params_key = args.x if args.x.startswith("params") else "params_non_embedding"
    title = datasets[0] + (f", sweep {args.sweep}" if args.sweep else "")
    specs = default_specs(args.metric, params_key)
    plots = [] if args.no_plots else plot_all(col.runs, fits, out, specs, title)
    print(f"fitted metric: {args.metric} vs {args.x}   L = (beta X)^alpha, "
          f"95% bootstrap CI ({args.bootstrap} draws)")
    print("\n".join(format_table(fits[args.metric].get(args.x, {}))))
    if args.x != "flops_train_total" and "flops_train_total" in fits[args.metric]:
        print(f"{args.metric} vs flops_train_total, fitted on the compute-optimal frontier")
        print("\n".join(format_table(fits[args.metric]["flops_train_total"], "frontier")))
    print(f"wrote {out / 'points.csv'}, {out / 'fits.json'} and {len(plots)} plot file(s) to {out}/")
    return report


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(message)s")
    logging.getLogger("genarena").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    report_errors(PROG, lambda: run(args))


if __name__ == "__main__":
    main()

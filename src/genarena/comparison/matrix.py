"""``genarena-matrix``: the report of the order x head matrix, from the finished runs of ``+sweep=matrix``.

Every generator run records its cell (``order``, ``head``, ``cell`` in ``metrics.json``). This reads the newest
finished run of each cell and training seed under ``matrix.runs`` (the sweep's directory), evaluates it as
``genarena-compare`` evaluates a paradigm (:func:`~genarena.evaluation.score_generator`: N class-balanced samples,
FID with the named extractor, class accuracy, sampling time and steps), adds the reference rows (real images, each
tokenizer's reconstructions: the floors of the FIDs) and writes ``report.md`` (3 x 2 tables of orders x heads, one
per quantity, the full table, what the two papers' claims come to at this scale, and a place for the reading),
``results.csv``, ``results.json``, ``samples.png`` and ``frontier.png`` (:mod:`genarena.comparison.report` and
:mod:`genarena.comparison.plots`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from genarena.checkpoints import resolve_checkpoint
from genarena.comparison.pipeline import hardware, over_seeds, reference_rows
from genarena.comparison.plots import class_grid, save_frontier, save_sample_panels
from genarena.comparison.report import REFERENCE_TABLE, fmt, markdown_table, seeds_line, write_results
from genarena.errors import GenArenaError
from genarena.evaluation import make_evaluator, score_generator
from genarena.generators import load_generator
from genarena.generators.cells import CELLS, ORDERS, cell_label
from genarena.generators.heads import HEADS
from genarena.lit.wandb_results import log_evaluation
from genarena.metrics.classifier import load_classifier
from genarena.runs import iter_runs
from genarena.training.classifier import ensure_classifier

DEFAULT_OUT = Path("outputs") / "matrix"  # ignored by git; matrix.out=experiments/matrix/<data> refreshes the report
ORDER_OPTIONS = {order: CELLS[order, "ce"][0] for order in ORDERS}  # the option naming each order: ar, maskgit, var
COLUMNS = [  # the full table: (column, key in a row, format)
    ("cell", "cell", "{}"), ("paradigm", "paradigm", "{}"), ("tokenizer", "tokenizer", "{}"), ("width", "width", "{}"),
    ("non-emb. params", "params_non_embedding", "{:,.0f}"), ("train GFLOPs", "train_gflops", "{:.3g}"),
    ("train min", "train_min", "{:.1f}"), ("steps", "steps", "{:.0f}"), ("FID", "fid", "{:.2f}"),
    ("IS", "isc_mean", "{:.2f}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
    ("class acc", "class_acc", "{:.3f}"), ("sample s/img", "sample_s_per_image", "{:.4f}"),
    ("sampling steps", "sampling_steps", "{:.0f}"),
]
GRIDS = [  # the 3 x 2 tables: (title, key, format)
    ("FID", "fid", "{:.2f}"), ("class accuracy", "class_acc", "{:.3f}"),
    ("sampling time, s / image (sampling steps)", "sample_s_per_image", "{:.4f}"),
    ("training compute, GFLOPs", "train_gflops", "{:.4g}"),
    ("non-embedding parameters (width)", "params_non_embedding", "{:,.0f}"),
]
READING = "reading.md"  # in the report's directory: the reading of the numbers, written by hand, kept on refreshes
READING_PLACEHOLDER = (f"_To be written after the real run, in `{READING}` beside this report (it is included here on "
                       "every refresh): which of the two papers' claims hold at this scale and which do not, and "
                       "what limits the conclusion (one dataset, one size, one budget)._")


def find_cells(runs: Path) -> dict[tuple[str, int], Path]:
    """The newest finished generator run under ``runs`` per (cell, training seed); a cell is ``<order>-<head>``."""
    found: dict[tuple[str, int], tuple[float, Path]] = {}
    for run in iter_runs(runs):
        m = run.metrics
        if m.get("task") != "generator" or m.get("status") != "finished" or not m.get("cell"):
            continue
        key = (m["cell"], int(m.get("seed", 0)))
        if key not in found or run.mtime > found[key][0]:
            found[key] = (run.mtime, run.dir)
    return {k: d for k, (_, d) in sorted(found.items())}


def evaluate_cells(opts: DictConfig, evaluator, checkpoint: str, runs: dict[tuple[str, int], Path],
                   panels: dict[str, torch.Tensor], device: str, wandb: bool = False) -> list[dict[str, Any]]:
    """One result row per (cell, seed): training facts from its ``metrics.json`` plus the scores of its samples
    (each cell's first seed makes its sample panel); with ``wandb`` each evaluation is logged into its run."""
    rows = []
    for (_, seed), run_dir in runs.items():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        generator, tokenizer, hp = load_generator(resolve_checkpoint(run_dir, checkpoint))
        sampling = dict(hp["generator"]["sampling"])
        scalars, result = score_generator(generator, tokenizer, hp, evaluator, sampling, opts.num_samples, opts.seed,
                                          opts.batch_size, device)
        label = cell_label(metrics["order"], metrics["head"])
        grid = class_grid(result.images, result.labels, opts.grid_per_class)
        panels.setdefault(label, grid)
        if wandb:
            log_evaluation(run_dir, scalars, metrics, image=grid)
        row = {"cell": label, "order": metrics["order"], "head": metrics["head"], "paradigm": metrics["paradigm"],
               "seed": seed, "tokenizer": metrics.get("tokenizer"), "tokenizer_ckpt": metrics.get("tokenizer_ckpt"),
               "width": metrics.get("width"), "depth": metrics.get("depth"),
               "params_non_embedding": metrics.get("params_non_embedding"), "params": metrics.get("params"),
               "match_params": metrics.get("match_params"),
               "train_gflops": (metrics.get("flops_train_total") or math.nan) / 1e9,
               "train_min": (metrics.get("train_time_s") or math.nan) / 60, "steps": metrics.get("steps"),
               "images_seen": metrics.get("images_seen"), "val_loss_best": metrics.get("val_loss_best"),
               "run_dir": str(run_dir), **scalars}
        rows.append(row)
        print(f"{label} (seed {seed}, {row['paradigm']}): FID {row.get('fid', math.nan):.2f}, class acc "
              f"{row.get('class_acc', math.nan):.3f}, {row['sample_s_per_image']:.4f} s/image", flush=True)
    return rows


def grid_table(rows: list[dict[str, Any]], key: str, spec: str) -> list[str]:
    """A 3 x 2 Markdown table of ``key``: orders (rows, with the option naming each) x heads (columns)."""
    by_cell = {(r["order"], r["head"]): r for r in rows}
    lines = ["| order | " + " | ".join(f"{h} head" for h in HEADS) + " |", "|---|" + "---|" * len(HEADS)]
    for order in ORDERS:
        cells = []
        for head in HEADS:
            r = by_cell.get((order, head))
            if r is None:
                cells.append("missing")
                continue
            several = (r.get("seeds") or 1) > 1
            text = fmt(r.get(key), spec, r.get(f"{key}_std") if several else None)
            if key == "params_non_embedding":
                text += f" ({fmt(r.get('width'), '{:.0f}')})"
            elif key == "sample_s_per_image":
                text += f" ({fmt(r.get('sampling_steps'), '{:.0f}')} steps)"
            cells.append(f"{text} `{r['paradigm']}`")
        lines.append(f"| {order} (`{ORDER_OPTIONS[order]}`) | " + " | ".join(cells) + " |")
    return lines


def verdict(better: dict[str, Any] | None, worse: dict[str, Any] | None, key: str = "fid") -> str:
    """Whether ``better`` has the lower ``key`` than ``worse``: holds / does not hold / within seed noise (the
    difference is below the sum of the standard deviations over seeds) / not measured."""
    if better is None or worse is None or not all(math.isfinite(r.get(key, math.nan)) for r in (better, worse)):
        return "not measured"
    a, b = better[key], worse[key]
    noise = (better.get(f"{key}_std") or 0.0) + (worse.get(f"{key}_std") or 0.0)
    text = f"{fmt(a, '{:.2f}')} vs {fmt(b, '{:.2f}')}"
    if abs(a - b) <= noise:
        return f"within seed noise ({text})"
    return f"{'holds' if a < b else 'does not hold'} ({text})"


def claims(rows: list[dict[str, Any]]) -> list[str]:
    """What the two papers' claims come to in the FID table (lower is better)."""
    by_cell = {(r["order"], r["head"]): r for r in rows}
    lines = ["| claim | cells compared | FID |", "|---|---|---|"]
    for order in ORDERS:
        carried = " (carried to next-scale)" if order == "next-scale" else ""
        claim = f"MAR: the diffusion head beats the CE head{carried}"
        lines.append(f"| {claim} | {order} x diffusion vs {order} x ce | "
                     f"{verdict(by_cell.get((order, 'diffusion')), by_cell.get((order, 'ce')))} |")
    for head in HEADS:
        lines.append(f"| VAR: the next-scale order beats the raster order | next-scale x {head} vs raster x {head} | "
                     f"{verdict(by_cell.get(('next-scale', head)), by_cell.get(('raster', head)))} |")
    return lines


def write_matrix_report(out: Path, rows: list[dict[str, Any]], refs: list[dict[str, Any]],
                        meta: dict[str, Any]) -> Path:
    """``report.md``, ``results.csv`` and ``results.json`` in ``out``; returns the report's path."""
    write_results(out, rows, refs, meta)
    extractor, n = meta["extractor"], meta["num_samples"]
    targets = sorted({int(r["match_params"]) for r in rows if r.get("match_params")})
    budget = sorted({f"{fmt(r.get('steps'), '{:,.0f}')} steps, {fmt(r.get('images_seen'), '{:,.0f}')} images"
                     for r in rows})
    lines = [
        f"# The order x head matrix: {meta['name']}", "",
        "Three generation orders (raster, masked, next-scale) x two per-token heads (cross-entropy on VQ indices, "
        f"MAR's diffusion head on continuous tokens), on one backbone, trained on `{meta['data']}` "
        f"(`{meta['runs']}`).", "",
        f"- Equal non-embedding parameters: each cell's width is the one closest to "
        f"{', '.join(f'{t:,}' for t in targets) or 'the configured width (match_params not set)'} "
        "(`match_params`); the counts are in the tables.",
        f"- Equal training budget: {'; '.join(budget)} for every cell.",
        f"- Every FID / IS / precision / recall: **N = {n}** images vs the real `{meta['split']}` split "
        f"({meta['n_real']} images), **{extractor}** features{meta['extractor_note']}.",
        f"- Class accuracy: the domain classifier's label agrees with the requested class (its real validation "
        f"accuracy: {fmt(meta.get('classifier_val_acc'), '{:.3f}')}).",
        f"- Sampling: {n} class-balanced labels, seed {meta['seed']}, each cell's default sampling config (its "
        f"paper's), its {meta['checkpoint']} checkpoint, batch {meta['batch_size']}, on {meta['device']}; sampling "
        "steps count sequential network passes (a diffusion head adds its reverse chain to each).",
        f"- Command: `{meta['command']}`; hardware: {meta['hardware']}; {meta['total_min']:.1f} min.",
        seeds_line(meta, "`genarena-train -m +sweep=matrix seed=0,1,2`, then `genarena-matrix`,"), "",
    ]
    for title, key, spec in GRIDS:
        lines += [f"## {title}", "", *grid_table(rows, key, spec), ""]
    lines += ["## The papers' claims at this scale (from the FID table; lower is better)", "", *claims(rows), "",
              "## Reading", "", meta.get("reading") or READING_PLACEHOLDER, "",
              "## Every cell", "", *markdown_table(COLUMNS, rows), "",
              "Validation losses are not in the tables: a cross-entropy and a diffusion loss are not on one scale.", "",
              f"## Reference rows (floors of the FIDs above; same N = {n}, same {extractor} features)", "",
              *markdown_table(REFERENCE_TABLE, refs), ""]
    if meta["missing"]:
        lines += [f"**Missing cells** (no finished run under `{meta['runs']}`): {', '.join(meta['missing'])}", ""]
    lines += ["## Samples", "", "![samples](samples.png)", "",
              "Rows are classes, one panel per cell; the first panel is real validation images.", "",
              "## Quality vs sampling time", "", "![frontier](frontier.png)", "", "## Runs", ""]
    lines += [f"- {r['cell']} (seed {r['seed']}): `{r['run_dir']}`" for r in meta["per_seed"]]
    lines += [f"- tokenizer {name}: `{path}`" for name, path in meta["tokenizers"].items()]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_matrix(cfg: DictConfig, command: str = "genarena-matrix") -> Path:
    """Evaluate the finished cells under ``cfg.matrix.runs`` and write the report (module docstring); returns the
    path of ``report.md``."""
    start = time.perf_counter()
    opts = cfg.matrix
    runs_root = Path(opts.runs) if opts.runs else Path(cfg.paths.runs_dir) / f"matrix_{cfg.data.name}"
    name = opts.name or cfg.data.name
    out = Path(opts.out) if opts.out else DEFAULT_OUT / name
    found = find_cells(runs_root)
    if not found:
        raise GenArenaError(f"genarena-matrix: no finished generator run under {runs_root}; run "
                            "`genarena-train -m +sweep=matrix` first (or point matrix.runs at its directory)")
    out.mkdir(parents=True, exist_ok=True)
    print(f"==> [genarena-matrix] {len(found)} finished run(s) under {runs_root}: "
          f"{', '.join(f'{c} (seed {s})' for c, s in found)}", flush=True)
    classifier_path = ensure_classifier(cfg)
    cfg.eval.num_samples = int(opts.num_samples)
    evaluator = make_evaluator(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    real_val, val_labels = evaluator.real
    panels = {"real (val)": class_grid(real_val, val_labels, opts.grid_per_class)}
    per_seed = evaluate_cells(opts, evaluator, cfg.eval.checkpoint, found, panels, device,
                              wandb=cfg.logger.name == "wandb")
    rows = over_seeds(per_seed, key="cell")
    order = {cell_label(o, h): i for i, (o, h) in enumerate(CELLS)}
    rows.sort(key=lambda r: order[r["cell"]])
    tokenizers = {r["tokenizer"]: r["tokenizer_ckpt"] for r in per_seed if r.get("tokenizer_ckpt")}
    ref_opts = OmegaConf.create({"num_samples": int(opts.num_samples), "batch_size": int(opts.batch_size),
                                 "tokenizers": sorted(tokenizers)})
    refs = reference_rows(cfg, ref_opts, evaluator, {k: Path(v) for k, v in tokenizers.items()})
    save_sample_panels(panels, out / "samples.png")
    save_frontier([dict(r, paradigm=r["cell"]) for r in rows], refs, out / "frontier.png", evaluator.extractor.kind,
                  int(opts.num_samples))
    _, cmeta = load_classifier(classifier_path)
    extractor_note = ("" if evaluator.extractor.kind == "inception" else
                      f" (the project's domain classifier `{classifier_path.name}`, digest "
                      f"{evaluator.extractor.digest}: numbers compare only with the same classifier)")
    present = {r["cell"] for r in rows}
    meta = {
        "name": name, "data": cfg.data.name, "runs": str(runs_root), "split": evaluator.split,
        "n_real": len(real_val), "num_samples": int(opts.num_samples), "extractor": evaluator.extractor.kind,
        "extractor_note": extractor_note, "classifier_val_acc": cmeta.get("val_acc"), "seed": int(opts.seed),
        "batch_size": int(opts.batch_size), "checkpoint": cfg.eval.checkpoint, "device": device,
        "command": command, "hardware": hardware(), "seeds": sorted({s for _, s in found}), "per_seed": per_seed,
        "missing": [cell_label(o, h) for o, h in CELLS if cell_label(o, h) not in present],
        "tokenizers": tokenizers,
        "reading": (out / READING).read_text().strip() if (out / READING).is_file() else None,
        "total_min": (time.perf_counter() - start) / 60,
    }
    path = write_matrix_report(out, rows, refs, meta)
    print(f"wrote {path} ({meta['total_min']:.1f} min)", flush=True)
    return path

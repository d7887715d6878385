"""The comparison's report: ``report.md`` (tables, figures, runs), ``results.csv`` and ``results.json``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

TABLE = [  # (column, key in a result row, format)
    ("paradigm", "paradigm", "{}"), ("tokenizer", "tokenizer", "{}"), ("params", "params", "{:,}"),
    ("train GFLOPs", "train_gflops", "{:.3g}"), ("train min", "train_min", "{:.1f}"),
    ("val loss", "val_loss", "{:.4f}"),
    ("FID", "fid", "{:.2f}"), ("IS", "isc_mean", "{:.2f}"), ("precision", "precision", "{:.3f}"),
    ("recall", "recall", "{:.3f}"), ("class acc", "class_acc", "{:.3f}"),
    ("sample s/img", "sample_s_per_image", "{:.4f}"), ("sampling steps", "sampling_steps", "{}"),
]
REFERENCE_TABLE = [("reference", "paradigm", "{}"), ("FID", "fid", "{:.2f}"), ("IS", "isc_mean", "{:.2f}"),
                   ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
                   ("class acc", "class_acc", "{:.3f}")]

EDIT_TABLE = [("paradigm", "paradigm", "{}"), ("in-paint FID", "inpaint_fid", "{:.2f}"),
              ("in-paint class acc", "inpaint_class_acc", "{:.3f}"), ("out-paint FID", "outpaint_fid", "{:.2f}"),
              ("out-paint class acc", "outpaint_class_acc", "{:.3f}"), ("edit s/img", "outpaint_s_per_image", "{:.4f}")]


SEED_COLUMNS = ("fid", "isc_mean", "precision", "recall", "class_acc", "val_loss")  # shown per seed


def fmt(value: Any, spec: str, std: Any = None) -> str:
    """``value`` formatted by ``spec``; with a standard deviation over several seeds, ``mean ± std``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if spec in ("{}", "{:,}"):  # counts (params, steps) averaged over seeds come back as floats
        value, std = (int(v) if isinstance(v, float) and v.is_integer() else v for v in (value, std))
    try:
        text = spec.format(value)
        return text if std is None else f"{text} ± {spec.format(std)}"
    except (ValueError, TypeError):
        return str(value)


def markdown_table(columns: list[tuple[str, str, str]], rows: list[dict[str, Any]]) -> list[str]:
    """Lines of a Markdown table with ``columns`` = (header, key, format) over ``rows``; a row aggregated over
    several seeds shows ``mean ± std`` where it has ``<key>_std``."""
    lines = ["| " + " | ".join(c for c, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        several = (r.get("seeds") or 1) > 1
        lines.append("| " + " | ".join(fmt(r.get(k), s, r.get(f"{k}_std") if several else None)
                                       for _, k, s in columns) + " |")
    return lines


def report_tables(per_seed: list[dict[str, Any]], refs: list[dict[str, Any]],
                  editing: list[dict[str, Any]] | None = None) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """The report's tables as (columns, rows) of raw values (None where a row has no value), for W&B:
    ``report``, one row per paradigm and training seed with the columns of the paradigms table,
    ``references``, and ``editing`` when there are editing rows."""
    columns = [TABLE[0], ("seed", "seed", "{}"), *TABLE[1:], ("run", "run_dir", "{}")]

    def raw(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    tables = {"report": ([c for c, _, _ in columns], [[raw(r.get(k)) for _, k, _ in columns] for r in per_seed]),
              "references": ([c for c, _, _ in REFERENCE_TABLE],
                             [[raw(r.get(k)) for _, k, _ in REFERENCE_TABLE] for r in refs])}
    if editing:
        tables["editing"] = ([c for c, _, _ in EDIT_TABLE],
                             [[raw(r.get(k)) for _, k, _ in EDIT_TABLE] for r in editing])
    return tables


def write_results(out: Path, rows: list[dict[str, Any]], refs: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``results.csv`` (one row per paradigm and seed, and per reference) and ``results.json`` (the rows over
    seeds, each seed's rows, the references and the meta data)."""
    per_seed = meta.get("per_seed") or rows
    keys = sorted({k for r in per_seed + refs for k in r})
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in per_seed + refs:
            writer.writerow(r)
    meta = {k: v for k, v in meta.items() if k != "per_seed"}
    (out / "results.json").write_text(json.dumps({"meta": meta, "paradigms": rows, "per_seed": per_seed,
                                                  "references": refs}, indent=2, default=str))


def seeds_line(meta: dict[str, Any], more_seeds: str = "`compare.seeds=[0,1,2]`") -> str:
    """What the table's numbers are over: one training seed, or the mean ± sample std over several;
    ``more_seeds`` says how to get several."""
    seeds = meta.get("seeds") or [0]
    if len(seeds) == 1:
        return (f"- One training seed ({seeds[0]}): no error bars; {more_seeds} gives mean ± std over "
                "seeds, so a difference can be told from seed noise.")
    return (f"- {len(seeds)} training seeds ({', '.join(map(str, seeds))}): every paradigm row is the mean ± sample "
            "standard deviation over seeds (each seed below); reference rows do not depend on the seed.")


def write_report(out: Path, rows: list[dict[str, Any]], refs: list[dict[str, Any]], meta: dict[str, Any]) -> Path:
    """``report.md``, ``results.csv`` and ``results.json`` in ``out``; returns the report's path."""
    write_results(out, rows, refs, meta)
    extractor, n = meta["extractor"], meta["num_samples"]
    lines = [
        f"# genarena-compare: {meta['name']}", "",
        f"Paradigms trained against frozen tokenizers on `{meta['data']}`, one size for all "
        f"(generator overrides: `{' '.join(meta['generator_args']) or 'none'}`).", "",
        f"- Every FID / IS / precision / recall: **N = {n}** images vs the real `{meta['split']}` split "
        f"({meta['n_real']} images), **{extractor}** features{meta['extractor_note']}.",
        f"- Class accuracy: the domain classifier's label agrees with the requested class "
        f"(real validation accuracy of that classifier: {fmt(meta.get('classifier_val_acc'), '{:.3f}')}).",
        f"- Sampling: {n} class-balanced labels, seed {meta['seed']}, each run's default sampling config and "
        f"its {meta.get('checkpoint', 'last')} checkpoint (`eval.checkpoint`), batch {meta['batch_size']}, "
        f"on {meta['device']}.",
        f"- Command: `{meta['command']}`; hardware: {meta['hardware']}; total wall time "
        f"{meta['total_min']:.1f} min.",
        seeds_line(meta), "",
        "## Paradigms", "", *markdown_table(TABLE, rows),
        "", f"## Reference rows (floors of the FID above; same N = {n}, same {extractor} features)", "",
        *markdown_table(REFERENCE_TABLE, refs),
    ]
    seeds = meta.get("seeds") or [0]
    if len(seeds) > 1:
        lines += ["", "## Each training seed", "", "| paradigm | seed | " + " | ".join(SEED_COLUMNS) + " |",
                  "|---|---|" + "---|" * len(SEED_COLUMNS)]
        lines += [f"| {r['paradigm']} | {r['seed']} | " + " | ".join(fmt(r.get(k), "{:.3f}") for k in SEED_COLUMNS)
                  + " |" for r in meta["per_seed"]]
    if meta.get("editing"):
        edits = meta["editing"]
        lines += ["", f"## Editing (zero-shot, `compare.edit_samples`; N = {edits[0]['n']} held-out validation images)",
                  "", f"In-painting regenerates the centre box (`mask=center`), out-painting the right half "
                  f"(`mask=right`), each under the image's own label, with each run's default sampling config "
                  f"and its first training seed "
                  f"(`genarena-edit`, `Generator.complete`). FID: the completed images vs the real "
                  f"`{meta['split']}` split ({extractor} features, N = {edits[0]['n']}: read it against the "
                  "paradigms' own, not across sample sizes; the kept part comes from that split, so it flatters "
                  "every row alike). Class accuracy: the domain classifier agrees with the label. Time: "
                  "out-painting, per image. `results.json` adds the error on the kept pixels; "
                  "`benchmarks/editing.py` sets it against the tokenizer's and scores relabelling.", "",
                  *markdown_table(EDIT_TABLE, edits)]
    if meta["reused"]:
        lines += ["", f"Reused from earlier runs (not trained by this invocation, so its wall time leaves them out; "
                      f"a reused generator's training time is in the table): {', '.join(meta['reused'])}."]
    if meta["missing"]:
        lines += ["", f"**Missing runs** (failed or not finished; see their run directories): {meta['missing']}"]
    lines += ["", "## Samples", "", "![samples](samples.png)", "",
              "Rows are classes, one panel per paradigm; the first panel is real validation images.", "",
              "## Quality vs sampling time", "", "![frontier](frontier.png)", "",
              "## Runs", ""]
    lines += [f"- {r['paradigm']}: `{r['run_dir']}`" for r in rows]
    lines += [f"- tokenizer {name}: `{d}`" for name, d in meta["tokenizer_runs"].items()]
    lines += ["", "Stage wall times (min): " + ", ".join(f"{k} {v:.1f}" for k, v in meta["stage_min"].items()), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path

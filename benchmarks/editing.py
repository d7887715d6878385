"""Zero-shot editing of every paradigm on held-out digits: in-painting (the centre box) and out-painting (the right
half) with ``Generator.complete``, from the trained runs of a comparison (``make compare``).

Per paradigm (the newest finished run of each under ``--runs``, training seed ``--seed``), ``--n`` class-balanced
validation images (never trained on) are edited under their true label and under a changed one (``(y + 1) mod
classes``), and scored with the comparison's evaluator (its extractor: Inception when its weights are at hand,
else the domain classifier):

- FID of the completed images against the real validation split;
- class accuracy of the completions under the true label, and under the changed label (did the masked region
  follow the new class?);
- the error on the known region (MSE on the kept pixels against the originals, [-1, 1] scale; also on those more
  than a token from the hole) beside the tokenizer's own reconstruction error on the same pixels: editing should
  keep the known region at that floor.

Writes benchmarks/editing.json and .md (``--out`` elsewhere).

    python benchmarks/editing.py --runs runs/compare/mnist5k [--n 300] [--seed 0] [--set eval.extractor=domain]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from genarena.checkpoints import read_checkpoint, resolve_checkpoint
from genarena.comparison.pipeline import reconstruct
from genarena.config import compose
from genarena.editing import EDIT_TASKS, interior, known_region_mse, load_edit_images, pixel_mask, score_edit_tasks
from genarena.evaluation import make_evaluator
from genarena.generators import load_generator
from genarena.runs import iter_runs

OUT = Path(__file__).resolve().parent
TASK_NAMES = {"inpaint": "in-painting (centre box)", "outpaint": "out-painting (right half)"}


def paradigm_runs(root: Path, seed: int) -> dict[str, Path]:
    """The newest finished generator run per paradigm (``mar`` and ``mar-raster`` apart) of training ``seed``."""
    found: dict[str, tuple[float, Path]] = {}
    for run in iter_runs(root):
        m = run.metrics
        if m.get("task") != "generator" or m.get("status") != "finished" or m.get("seed", seed) != seed:
            continue
        hp = read_checkpoint(resolve_checkpoint(run.dir, "last"), expected_role="generator")["hyper_parameters"]
        label = hp["generator"]["name"] + ("-raster" if hp["generator"].get("order") == "raster" else "")
        if label not in found or run.mtime > found[label][0]:
            found[label] = (run.mtime, run.dir)
    return {label: d for label, (_, d) in sorted(found.items())}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="a comparison's runs directory (runs/compare/<name>)")
    parser.add_argument("--n", type=int, default=300, help="validation images per paradigm (class-balanced)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the runs, and the sampling seed")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of the evaluation config (eval.extractor=domain, paths.cache_dir=...)")
    parser.add_argument("--out", default=str(OUT), help="folder of editing.json / editing.md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = paradigm_runs(Path(args.runs), args.seed)
    if not runs:
        parser.error(f"--runs {args.runs}: no finished generator run of training seed {args.seed} there")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()

    first = read_checkpoint(resolve_checkpoint(next(iter(runs.values())), args.checkpoint),
                            expected_role="generator")["hyper_parameters"]
    cfg = compose("config", [f"data={first['data']['name']}", *args.set])
    OmegaConf.set_struct(cfg, False)
    cfg.data = OmegaConf.create(first["data"])  # the runs' data as trained (resolution, channels ...)
    evaluator = make_evaluator(cfg)
    images, labels = load_edit_images("val", cfg.data, min(args.n, len(evaluator.real[0])))
    num_classes = int(first["num_classes"])
    real_row = {"paradigm": "real (the edited validation images)", "n": len(images),
                **evaluator(images, labels, metrics=["fid"])}

    rows = []
    for label, run_dir in runs.items():
        generator, tokenizer, hp = load_generator(resolve_checkpoint(run_dir, args.checkpoint))
        if hp["data"] != first["data"]:
            print(f"skipping {label}: {run_dir} was trained on other data than {next(iter(runs.values()))}")
            continue
        sampling = dict(hp["generator"]["sampling"])
        scores = score_edit_tasks(generator, tokenizer, sampling, images, labels, evaluator, args.seed, args.batch,
                                  device, relabel=True, num_classes=num_classes)
        recon = reconstruct(tokenizer.to(device), images.to(device), args.batch).cpu()
        margin = images.shape[-1] // tokenizer.grid[1]
        for task, spec in EDIT_TASKS.items():
            known = pixel_mask(spec, tuple(images.shape[-2:]))
            row = {"paradigm": label, "task": task, "run_dir": str(run_dir), "n": len(images), "sampling": sampling,
                   **{k[len(task) + 1:]: v for k, v in scores.items() if k.startswith(f"{task}_")},
                   "recon_known_mse": known_region_mse(recon, images, known),
                   "recon_interior_mse": known_region_mse(recon, images, interior(known, margin))}
            for key in ("known", "interior"):
                row[f"{key}_mse_over_floor"] = row[f"{key}_mse"] / max(row[f"recon_{key}_mse"], 1e-12)
            rows.append(row)
            print(f"{label} {task}: FID {row['fid']:.2f}, class acc {row['class_acc']:.3f} (changed label "
                  f"{row['relabel_class_acc']:.3f}), known MSE {row['known_mse']:.4f} (tokenizer "
                  f"{row['recon_known_mse']:.4f}), more than a token from the hole {row['interior_mse']:.4f} "
                  f"(tokenizer {row['recon_interior_mse']:.4f})", flush=True)

    runs_path = Path(args.runs).resolve()
    shown = runs_path.relative_to(Path.cwd()) if runs_path.is_relative_to(Path.cwd()) else Path(runs_path.name)
    meta = {"runs": str(shown), "n": len(images), "seed": args.seed, "checkpoint": args.checkpoint,
            "data": cfg.data.name, "split": evaluator.split, "extractor": evaluator.extractor.kind,
            "num_classes": num_classes, "device": device, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "minutes": (time.perf_counter() - start) / 60}
    result = {"meta": meta, "real": real_row, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "editing.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "editing.md").write_text(markdown(result) + "\n")
    print(f"wrote {out / 'editing.md'} ({meta['minutes']:.1f} min)")
    return result


def markdown(result: dict[str, Any]) -> str:
    meta, real = result["meta"], result["real"]
    lines = [
        "# Zero-shot editing", "",
        f"`python benchmarks/editing.py --runs {meta['runs']} --n {meta['n']}`: the newest finished run of every "
        f"paradigm under that folder (training seed {meta['seed']}, {meta['checkpoint']} checkpoint, its default "
        f"sampling config), {meta['n']} class-balanced `{meta['data']}` validation images (held out from training), "
        f"{meta['device']} (threads: {meta['threads']}, torch {meta['torch']}), {meta['minutes']:.1f} min.", "",
        f"- FID: completions vs the real `{meta['split']}` split, {meta['extractor']} features, N = {meta['n']}. "
        f"The edited images themselves score {real['fid']:.2f} (the floor at this N: they are part of that split, "
        "and so is every completion's kept region).",
        "- Class acc: the domain classifier agrees with the label the region was completed under: the image's own "
        f"(true), or `(y + 1) mod {meta['num_classes']}` (changed: class relabelling, the kept part still shows "
        "the true class).",
        "- Known MSE: squared error on the kept pixels against the originals ([-1, 1] scale), over all of them and "
        "over those more than a token from the hole (interior), each beside the tokenizer's own reconstruction "
        "error on the same pixels (the floor) and as a ratio to it. The kept tokens are exact, but the decoder's "
        "receptive field crosses the mask's edge, so the pixels next to the hole follow the generated tokens: the "
        "interior ratio is the one that should stay at 1 (VAR's coarse scales could also move it).", "",
        "| paradigm | task | FID | class acc (true) | class acc (changed) | known MSE (tokenizer) | ratio | "
        "interior MSE (tokenizer) | ratio | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['paradigm']} | {TASK_NAMES[r['task']]} | {r['fid']:.2f} | {r['class_acc']:.3f} | "
                     f"{r['relabel_class_acc']:.3f} | {r['known_mse']:.4f} ({r['recon_known_mse']:.4f}) | "
                     f"{r['known_mse_over_floor']:.2f} | {r['interior_mse']:.4f} ({r['recon_interior_mse']:.4f}) | "
                     f"{r['interior_mse_over_floor']:.2f} | {r['s_per_image']:.4f} |")
    lines += ["", "What each paradigm can use: `var` keeps the known part of every scale (each next scale is "
              "predicted from a map whose known region is the input's); `maskgit` and `mar` see every known token "
              "from the first step (bidirectional); raster `ar` and `mar-raster` see only the known tokens before "
              "the current position, so a hole's lower and right context is invisible to them."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

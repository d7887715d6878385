"""Stage-2 floor: each paradigm's default config trained on mnist5k for a fixed CPU budget, then judged.

For every paradigm: ``genarena-train task=generator generator=<p> tokenizer.ckpt=auto`` (the newest
tokenizer under ``--runs-dir``, e.g. from ``benchmarks/tokenizers.py``) capped at ``--minutes`` of
training, then ``--samples`` class-conditional samples (labels balanced over the classes, seed 0)
labelled by the domain classifier, at the run's best checkpoint (lowest validation loss) and at its last.
Writes benchmarks/generators.json and .md. ``--score-only`` re-scores the newest finished runs without training.

    python benchmarks/generators.py [--minutes 15] [--samples 1000] [--runs-dir runs/benchmarks] [--score-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent


def newest_run(runs_dir: Path, experiment: str) -> Path:
    runs = [p.parent for p in (runs_dir / experiment).rglob("metrics.json")]
    return max(runs, key=lambda p: (p / "metrics.json").stat().st_mtime)


def main() -> None:
    from genarena.checkpoints import read_checkpoint, resolve_checkpoint
    from genarena.config import compose
    from genarena.evaluation import make_evaluator, score_generator
    from genarena.generators import load_generator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=15)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--runs-dir", default="runs/benchmarks")
    parser.add_argument("--paradigms", nargs="+", default=["var", "ar", "maskgit", "mar"])
    parser.add_argument("--score-only", action="store_true", help="score the newest finished runs; no training")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every training job")
    args = parser.parse_args()
    runs_dir = Path(args.runs_dir)
    cfg = compose("config", ["data=mnist5k", f"paths.runs_dir={runs_dir}", "eval.extractor=domain"])
    evaluator = make_evaluator(cfg)  # the domain classifier judges class accuracy (trained once, cached)
    results = {}
    for p in args.paradigms:
        cmd = [sys.executable, "-m", "genarena.cli.train", "task=generator", f"generator={p}", "data=mnist5k",
               "tokenizer.ckpt=auto", f"trainer.max_time=00:00:{args.minutes:02d}:00", f"paths.runs_dir={runs_dir}",
               "force=true", "trainer.enable_progress_bar=false", *args.overrides]
        if not args.score_only:
            print(" ".join(cmd[3:]), flush=True)
            subprocess.run(cmd, check=True, env=os.environ)
        run = newest_run(runs_dir, f"generator_{p}_mnist5k")
        m = json.loads((run / "metrics.json").read_text())
        results[p] = {"params": m["params"], "depth": m["depth"], "steps": m["steps"],
                      "train_min": m["train_time_s"] / 60, "val_loss": m["val_loss"],
                      "val_loss_best": m["val_loss_best"], "run_dir": str(run)}
        # judged at the lowest validation loss (eval.checkpoint=best, genarena-eval's default); the last
        # weights are scored too, so overfitting within the budget shows in the table
        for select in ("best", "last"):
            ckpt = resolve_checkpoint(run, select)
            generator, tokenizer, hp = load_generator(ckpt)
            sampling = dict(hp["generator"]["sampling"])
            scalars, _ = score_generator(generator, tokenizer, hp, evaluator, sampling, args.samples, 0, 250, "cpu")
            suffix = "" if select == "best" else "_last"
            results[p].update({f"class_acc{suffix}": scalars["class_acc"], f"fid{suffix}": scalars.get("fid"),
                               f"step{suffix}": read_checkpoint(ckpt)["global_step"]})
            if select == "best":
                results[p]["sample_s_per_image"] = scalars["sample_s_per_image"]
        results[p]["floor_class_acc_80"] = results[p]["class_acc"] >= 0.8
        print(p, results[p], flush=True)
    meta = {"minutes": args.minutes, "samples": args.samples, "cpu_cores": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "extractor": evaluator.extractor.describe()}
    (OUT / "generators.json").write_text(json.dumps({"meta": meta, "paradigms": results}, indent=2))
    lines = ["# Generators on mnist5k (CPU)", "",
             f"Default configs, at most {args.minutes} minutes of training each on {os.cpu_count()} CPU cores; "
             f"{args.samples} class-balanced samples each; class accuracy = the domain classifier's label equals "
             "the requested class (floor 0.80). FID: N = {}, domain-classifier features.".format(args.samples), "",
             "Judged at each run's best checkpoint (lowest validation loss, `eval.checkpoint=best`); the last "
             "checkpoint's figures show what training past that point did.", "",
             "| paradigm | params | steps | train min | val loss (last / best) | best at step | class acc | FID | "
             "class acc, last | FID, last | s / image |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, r in results.items():
        lines.append(f"| {p} | {r['params']:,} | {r['steps']} | {r['train_min']:.1f} | {r['val_loss']:.4f} / "
                     f"{r['val_loss_best']:.4f} | {r['step']} | {r['class_acc']:.3f} | {r['fid']:.2f} | "
                     f"{r['class_acc_last']:.3f} | {r['fid_last']:.2f} | {r['sample_s_per_image']:.4f} |")
    lines += ["", "Re-run: `python benchmarks/generators.py` (after `python benchmarks/tokenizers.py`)."]
    (OUT / "generators.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

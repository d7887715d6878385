"""Stage-1 floors: each tokenizer's default config trained on mnist5k for at most 10 minutes.

Reports validation PSNR (images in [0, 1]) and codebook usage (fraction of codes used at least once
on the 500 validation images; per scale for msvq). Writes benchmarks/tokenizers.json and .md.

    python benchmarks/tokenizers.py [--minutes 10] [--runs-dir runs/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent


def newest_run(runs_dir: Path, experiment: str) -> Path:
    runs = sorted((runs_dir / experiment).iterdir(), key=lambda p: p.stat().st_mtime)
    return runs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--runs-dir", default="runs/benchmarks")
    parser.add_argument("--tokenizers", nargs="+", default=["vq", "msvq", "kl"])
    args = parser.parse_args()
    runs_dir = Path(args.runs_dir)
    previous = OUT / "tokenizers.json"  # a partial re-run (--tokenizers msvq) keeps the others' figures
    results = json.loads(previous.read_text()) if previous.is_file() else {}
    for name in args.tokenizers:
        cmd = [sys.executable, "-m", "genarena.cli.train", "task=tokenizer", f"tokenizer={name}", "data=mnist5k",
               f"trainer.max_time=00:00:{args.minutes:02d}:00", f"paths.runs_dir={runs_dir}", "force=true",
               "trainer.enable_progress_bar=false"]
        print(" ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env=os.environ)
        m = json.loads((newest_run(runs_dir, f"tokenizer_{name}_mnist5k") / "metrics.json").read_text())
        usage = {k: v for k, v in m.items() if k.startswith("val_usage")}
        results[name] = {"val_psnr": m["val_psnr"], "params": m["params"], "steps": m["steps"],
                         "train_time_s": m["train_time_s"], **usage,
                         "floor_psnr_20db": m["val_psnr"] >= 20.0,
                         "floor_usage_90": (min(v for k, v in usage.items() if k != "val_usage_min") >= 0.9)
                         if usage else None}
        print(name, results[name], flush=True)
    (OUT / "tokenizers.json").write_text(json.dumps(results, indent=2))
    lines = ["# Tokenizers on mnist5k (2 CPU cores)", "",
             f"Default configs, at most {args.minutes} minutes each (`trainer.max_time`); "
             "validation split (500 images).",
             "Usage = fraction of the codebook used at least once on the validation images (per scale for msvq).", "",
             "| tokenizer | params | steps | minutes | val PSNR (dB) | usage (min over scales) | per-scale usage |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        scales = [f"{r[k]:.2f}" for k in sorted(r) if k.startswith("val_usage_s")]
        usage = f"{r['val_usage_min']:.3f}" if "val_usage_min" in r else "-"
        lines.append(f"| {name} | {r['params']:,} | {r['steps']} | {r['train_time_s'] / 60:.1f} | "
                     f"{r['val_psnr']:.2f} | "
                     f"{usage} | {' / '.join(scales) or '-'} |")
    lines += ["", "Re-run: `python benchmarks/tokenizers.py`."]
    (OUT / "tokenizers.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

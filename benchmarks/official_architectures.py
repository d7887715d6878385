"""What the fairness choice costs: the shared backbone vs each official architecture, at equal parameter count.

genarena runs every paradigm on one shared transformer by default; raster AR and MAR can run on their papers'
networks instead (docs/architecture.md). This benchmark trains both on mnist5k, pair by pair:

- ``ar``: the shared backbone (``conf/generator/ar.yaml``) vs LlamaGen's GPT (``generator.backbone=llama``);
- ``mar``: the shared backbone (``conf/generator/mar.yaml``) vs MAR's own (``generator.backbone=vit
  generator.qk_norm=false generator.dropout=0.1 generator.diffusion_loss=learned_sigma``: plain ViT, MAR's dropout,
  the learned-variance diffusion loss).

Within a pair: the same tokenizer run (the newest finished ``vq`` / ``kl`` run under
``--tokenizers-from``, default ``--runs-dir``; trained with genarena-compare's tokenizer budget when there is none),
the same depth, and the same number of training steps (``STEPS``: about what ``make compare``'s 3-minute budget
gives each paradigm on 2 quiet CPU cores, so both arms see the same images however fast each runs and however busy
the machine is; ``--steps pair=N`` changes it). The official arm's width is the one (in steps of 4 x heads) whose
parameter count is closest to the shared arm's. Each arm is judged as genarena-compare judges a paradigm:
``compare.num_samples`` class-balanced samples (seed ``compare.seed``) at
``eval.checkpoint`` (best: the lowest validation loss), FID with the domain classifier's features, class accuracy;
plus the final and best validation losses (MAR: also ``val_mse``, the noise-prediction part, which compares across
its two losses; ``learned_sigma``'s loss adds the VLB term). Writes ``official_architectures.json`` / ``.md`` into
``--out`` (default: this folder). Finished runs with an identical config are reused (an interrupted run resumes).

    python benchmarks/official_architectures.py                    # about 25 minutes on 2 CPU cores
    python benchmarks/official_architectures.py --tokenizers-from runs/compare/mnist5k   # after make compare: ~20
    python benchmarks/official_architectures.py --pairs ar --max-steps 20 --samples 40 --out check   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

OUT = Path(__file__).resolve().parent
TOKENIZER_OF = {"ar": "vq", "mar": "kl"}
MNIST_CLASSES = 10
OFFICIAL = {  # the official architecture of each pair: generator overrides (the width is chosen to match params)
    "ar": ["generator.backbone=llama"],
    "mar": ["generator.backbone=vit", "generator.qk_norm=false", "generator.dropout=0.1",
            "generator.diffusion_loss=learned_sigma"],
}
STEPS = {"ar": 1500, "mar": 500}  # training steps per pair, the same for both arms (no wall-clock cap)
NAMES = {"ar": ("shared backbone", "LlamaGen GPT"), "mar": ("shared backbone", "MAR ViT + learned variance")}


def tokenizer_run(name: str, search: Path, runs_dir: Path, budget: list[str], extra: list[str]) -> Path:
    """The newest finished tokenizer run of ``name`` on mnist5k under ``search``; when there is none, one trained
    with genarena-compare's tokenizer budget in ``runs_dir``."""
    from genarena.config import compose
    from genarena.runs import find_tokenizer_run
    from genarena.training import run_training

    cfg = compose("config", ["task=tokenizer", f"tokenizer={name}", "data=mnist5k", f"paths.runs_dir={runs_dir}",
                             "trainer.enable_progress_bar=false", *budget, *extra])
    found = find_tokenizer_run(search, name, "mnist5k", cfg.data.resolution, cfg.data.channels)
    if found is None:
        print(f"training the {name} tokenizer ({' '.join(budget + extra)})", flush=True)
        run_training(cfg)
        found = find_tokenizer_run(runs_dir, name, "mnist5k", cfg.data.resolution, cfg.data.channels)
    return found


def params_of(overrides: list[str], tokenizer, num_classes: int) -> int:
    from genarena.config import compose, to_dict
    from genarena.generators import build_generator

    cfg = compose("config", overrides)
    return build_generator(to_dict(cfg.generator), tokenizer, num_classes).num_params()


def matching_width(base: list[str], official: list[str], target: int, tokenizer, num_classes: int) -> int:
    """The official arm's width (a multiple of 4 x heads, heads = depth) whose parameter count is closest to
    ``target`` (parameters grow with the width: the scan stops at the first width above it)."""
    from genarena.config import compose

    cfg = compose("config", base + official)
    step = 4 * (cfg.generator.heads or cfg.generator.depth)
    best, width = None, step
    while True:
        n = params_of(base + official + [f"generator.width={width}"], tokenizer, num_classes)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (width, n)
        if n > target:
            return best[0]
        width += step


def train_and_score(overrides: list[str], evaluator, opts, checkpoint: str) -> dict[str, Any]:
    """Train one arm (reused when an identical run finished) and score it as genarena-compare does."""
    from genarena.checkpoints import read_checkpoint, resolve_checkpoint
    from genarena.config import compose
    from genarena.evaluation import score_generator
    from genarena.generators import load_generator
    from genarena.training import run_training

    print("genarena-train " + " ".join(overrides), flush=True)
    m = run_training(compose("config", overrides))
    ckpt = resolve_checkpoint(m["run_dir"], checkpoint)
    generator, tokenizer, hp = load_generator(ckpt)
    sampling = dict(hp["generator"]["sampling"])
    scalars, _ = score_generator(generator, tokenizer, hp, evaluator, sampling, opts.num_samples, opts.seed,
                                 opts.batch_size, "cpu")
    row = {"params": m["params"], "depth": m["depth"], "width": m["width"], "heads": m["heads"],
           "steps": m["steps"], "train_min": m["train_time_s"] / 60, "val_loss": m.get("val_loss"),
           "val_loss_best": m.get("val_loss_best"), "val_mse": m.get("val_mse"), "fid": scalars.get("fid"),
           "class_acc": scalars.get("class_acc"), "sample_s_per_image": scalars["sample_s_per_image"],
           "checkpoint": ckpt.stem, "checkpoint_step": read_checkpoint(ckpt).get("global_step"),
           "run_dir": str(m["run_dir"])}
    print({k: v for k, v in row.items() if k != "run_dir"}, flush=True)
    return row


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def write_report(out: Path, results: dict[str, Any]) -> None:
    meta = results["meta"]
    (out / "official_architectures.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Shared backbone vs official architectures (mnist5k, CPU)", "",
        "What the fairness choice costs: each paradigm on genarena's shared backbone (the default) and on its "
        "paper's network, at equal parameter count (the official arm's width is matched), the same depth, the same "
        "tokenizer run and the same number of training steps for both arms ("
        + ", ".join(f"{pair}: {n:,}" for pair, n in meta["steps"].items())
        + " steps at the config's batch size, no wall-clock cap; about what make compare's 3-minute budget gives each "
        "paradigm on 2 quiet cores), so a slower architecture is not also a less trained one; `train min` shows the "
        "time each took" + (f" (capped for a check: `{' '.join(meta['cap'])}`)" if meta["cap"] else "") + ".",
        "",
        f"- Judged as genarena-compare judges: {meta['num_samples']} class-balanced samples (seed {meta['seed']}) at "
        f"the `{meta['checkpoint']}` checkpoint; FID with the domain classifier's features (digest "
        f"{meta['extractor'].get('eval_classifier_digest')}: compare only with the same classifier); class accuracy = "
        "the domain classifier's label equals the requested class.",
        "- Validation loss: final / best. MAR's `learned_sigma` loss adds the VLB term to the noise-prediction MSE, so "
        "its total is not comparable with `eps`'s; `val eps-MSE` is (the final validation MSE of the noise).",
        f"- {meta['hardware']}; total {meta['total_min']:.1f} min. Command: `{meta['command']}`. Conditions: "
        f"{meta.get('conditions', 'not stated')}.", "",
        "| pair | architecture | overrides | params | steps | train min | val loss (last / best) | val eps-MSE | "
        "FID | class acc | s / image |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pair, arms in results["pairs"].items():
        for r in arms.values():
            lines.append(
                f"| {pair} | {r['name']} | `{' '.join(r['overrides']) or '(defaults)'}` | {r['params']:,} | "
                f"{r['steps']} | {r['train_min']:.1f} | {fmt(r['val_loss'], '.4f')} / {fmt(r['val_loss_best'], '.4f')}"
                f" | {fmt(r['val_mse'], '.4f')} | {fmt(r['fid'], '.2f')} | {fmt(r['class_acc'], '.3f')} | "
                f"{r['sample_s_per_image']:.4f} |")
    lines += ["", "Official minus shared, per pair:", ""]
    for pair, arms in results["pairs"].items():
        s, o = arms["shared"], arms["official"]
        d = {k: (o[k] - s[k]) if o.get(k) is not None and s.get(k) is not None else None
             for k in ("fid", "class_acc", "val_loss_best", "val_mse")}
        lines.append(f"- `{pair}`: params {100 * (o['params'] / s['params'] - 1):+.1f}%, FID {fmt(d['fid'], '+.2f')}, "
                     f"class acc {fmt(d['class_acc'], '+.3f')}, best val loss {fmt(d['val_loss_best'], '+.4f')}"
                     + (f", val eps-MSE {fmt(d['val_mse'], '+.4f')}" if pair == "mar" else "") + ".")
    lines += ["", "Re-run: `python benchmarks/official_architectures.py` (one seed per arm)."]
    (out / "official_architectures.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/benchmarks/official_architectures")
    parser.add_argument("--tokenizers-from", default=None,
                        help="where to look for finished vq / kl tokenizer runs (default: --runs-dir), e.g. "
                             "runs/compare/mnist5k after `make compare`; missing ones are trained in --runs-dir")
    parser.add_argument("--pairs", nargs="+", default=list(OFFICIAL), choices=list(OFFICIAL))
    parser.add_argument("--samples", type=int, default=None, help="samples per arm (default: compare.num_samples)")
    parser.add_argument("--steps", nargs="*", default=[], metavar="PAIR=N",
                        help=f"training steps of both arms of a pair (default: {STEPS})")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="cap every job (tokenizers too) at this many steps: a quick end-to-end check")
    parser.add_argument("--conditions", default="", help="a note on the machine's state, copied into the report")
    parser.add_argument("--out", default=str(OUT), help="folder for official_architectures.json / .md")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every generator job")
    args = parser.parse_args()
    steps = dict(STEPS)
    for item in args.steps:
        pair, _, n = item.partition("=")
        if pair not in OFFICIAL or not n.isdigit() or int(n) < 1:
            parser.error(f"--steps {item}: expected PAIR=N with PAIR in {', '.join(OFFICIAL)} and N >= 1")
        steps[pair] = int(n)

    from genarena.comparison.pipeline import as_overrides, hardware
    from genarena.config import compose
    from genarena.evaluation import make_evaluator
    from genarena.tokenizers import load_tokenizer

    start = time.perf_counter()
    runs_dir = Path(args.runs_dir)
    compare = compose("compare", []).compare
    cap = [f"trainer.max_steps={args.max_steps}"] if args.max_steps else []
    tok_budget = as_overrides(compare.tokenizer_args)
    if args.samples:
        compare.num_samples = args.samples
    cfg = compose("config", ["data=mnist5k", "eval.extractor=domain", f"paths.runs_dir={runs_dir}"])
    evaluator = make_evaluator(cfg)  # the domain classifier of mnist5k (trained once, cached)
    results: dict[str, Any] = {"pairs": {}}
    for pair in args.pairs:
        tok_run = tokenizer_run(TOKENIZER_OF[pair], Path(args.tokenizers_from or runs_dir), runs_dir, tok_budget, cap)
        tokenizer, _ = load_tokenizer(tok_run)
        base = ["task=generator", f"generator={pair}", "data=mnist5k", f"tokenizer.ckpt={tok_run}",
                f"paths.runs_dir={runs_dir}", "trainer.enable_progress_bar=false",
                f"trainer.max_steps={steps[pair]}", "trainer.max_time=null", *cap, *args.overrides]
        shared_params = params_of(base, tokenizer, MNIST_CLASSES)
        width = matching_width(base, OFFICIAL[pair], shared_params, tokenizer, MNIST_CLASSES)
        arms = {"shared": [], "official": [*OFFICIAL[pair], f"generator.width={width}"]}
        results["pairs"][pair] = {}
        for (arm, extra), name in zip(arms.items(), NAMES[pair]):
            row = train_and_score([*base, f"experiment_name=official_architectures_{pair}_{arm}", *extra], evaluator,
                                  compare, cfg.eval.checkpoint)
            results["pairs"][pair][arm] = {"name": name, "overrides": extra, "tokenizer_run": str(tok_run), **row}
    results["meta"] = {
        "steps": {pair: steps[pair] for pair in args.pairs}, "cap": cap, "conditions": args.conditions or "not stated",
        "num_samples": int(compare.num_samples),
        "seed": int(compare.seed),
        "checkpoint": cfg.eval.checkpoint, "extractor": evaluator.extractor.describe(),
        "hardware": hardware(), "cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
        "torch": torch.__version__, "total_min": (time.perf_counter() - start) / 60,
        "command": "python benchmarks/official_architectures.py " + " ".join(
            [*([f"--tokenizers-from {args.tokenizers_from}"] if args.tokenizers_from else []),
             *(["--pairs", *args.pairs] if args.pairs != list(OFFICIAL) else []),
             *([f"--samples {args.samples}"] if args.samples else []),
             *(["--steps", *args.steps] if args.steps else []),
             *([f"--max-steps {args.max_steps}"] if args.max_steps else []), *args.overrides]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_report(out, results)
    print(f"wrote {out / 'official_architectures.md'} ({results['meta']['total_min']:.1f} min)", flush=True)


if __name__ == "__main__":
    main()

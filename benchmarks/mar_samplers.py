"""MAR's reverse diffusion samplers on a trained model: the paper's DDPM chain against DDIM with fewer steps.

MAR samples each token's continuous value with the denoiser's reverse chain; the paper's default is the ancestral
DDPM chain over 100 respaced steps (``generator.sampling.sampler=ddpm``, ``diffusion_steps=100``). DDIM (Song et al.
2021, ``x_{t-1} = sqrt(a_{t-1}) x0_hat + sqrt(1 - a_{t-1} - s_t^2) eps_hat + s_t z`` with ``s_t`` scaled by ``eta``) is
an option that takes fewer steps. This benchmark samples the newest finished ``mar`` run under ``--runs`` (training
seed ``--seed``; ``make compare``'s by default) with each variant, from the same labels and seed, and scores them as
``genarena-eval`` does: FID / precision / recall with the comparison's extractor, class accuracy, seconds per image
and analytic sampling FLOPs. The default stays the paper's; the table shows what fewer steps cost.

Writes benchmarks/mar_samplers.json and .md (``--out`` elsewhere).

    python benchmarks/mar_samplers.py                          # runs/compare/mnist5k, 1,000 samples: ~8 min on 2 cores
    python benchmarks/mar_samplers.py --runs runs/compare/mnist5k --n 1000 --variants ddpm:100 ddim:25:0 ddim:50:0
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

from genarena.checkpoints import resolve_checkpoint
from genarena.config import compose
from genarena.evaluation import make_evaluator, score_generator
from genarena.generators import load_generator
from genarena.generators.diffusion import SAMPLERS
from genarena.runs import newest_finished_runs, read_metrics

OUT = Path(__file__).resolve().parent
DEFAULT_VARIANTS = ("ddpm:100", "ddim:50:0", "ddim:25:0", "ddim:10:0", "ddpm:25")


def parse_variant(text: str) -> dict[str, Any]:
    """``sampler:steps[:eta]`` -> MAR sampling overrides, e.g. ``ddim:25:0`` (eta applies to ddim only)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in SAMPLERS or not parts[1].isdigit() or int(parts[1]) < 1:
        raise SystemExit(f"--variants {text!r}: expected sampler:steps[:eta] with sampler in {', '.join(SAMPLERS)} "
                         "and steps >= 1 (e.g. ddpm:100, ddim:25:0)")
    out: dict[str, Any] = {"sampler": parts[0], "diffusion_steps": int(parts[1])}
    if len(parts) == 3:
        if parts[0] != "ddim":
            raise SystemExit(f"--variants {text!r}: eta applies to ddim only")
        out["eta"] = float(parts[2])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/compare/mnist5k", help="where the trained mar run is (make compare's)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the run, and the sampling seed")
    parser.add_argument("--n", type=int, default=1000, help="samples per variant (class-balanced labels)")
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), metavar="SAMPLER:STEPS[:ETA]")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides of the evaluation config (eval.extractor=domain, paths.cache_dir=...)")
    parser.add_argument("--out", default=str(OUT), help="folder of mar_samplers.json / .md")
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    if args.threads:
        torch.set_num_threads(args.threads)
    found = newest_finished_runs(args.runs, "generator", "paradigm", seed=args.seed)
    if "mar" not in found:
        parser.error(f"--runs {args.runs}: no finished mar run of training seed {args.seed} (run make compare first)")
    run_dir = found["mar"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()

    generator, tokenizer, hp = load_generator(resolve_checkpoint(run_dir, args.checkpoint))
    cfg = compose("config", [f"data={hp['data']['name']}", *args.set])
    OmegaConf.set_struct(cfg, False)
    cfg.data = OmegaConf.create(hp["data"])  # the run's data as trained
    evaluator = make_evaluator(cfg)
    default = dict(hp["generator"]["sampling"])
    rows = []
    # the paper's default once more under the next sampling seed: FID's own sampling noise at this N
    runs = [(v, args.seed) for v in variants] + [(dict(default), args.seed + 1)]
    for variant, seed in runs:
        sampling = {**default, **variant}
        scores, _ = score_generator(generator, tokenizer, hp, evaluator, sampling, args.n, seed, args.batch, device)
        row = {"sampler": sampling["sampler"], "diffusion_steps": sampling["diffusion_steps"], "sampling_seed": seed,
               "eta": sampling["eta"] if sampling["sampler"] == "ddim" else None,
               "default": variant["sampler"] == default["sampler"]
               and variant["diffusion_steps"] == default["diffusion_steps"],
               **{k: scores.get(k) for k in ("fid", "precision", "recall", "class_acc", "sample_s_per_image",
                                             "flops_sample_per_image", "sampling_steps")}}
        rows.append(row)
        print(f"{row['sampler']} x {row['diffusion_steps']}: FID {row['fid']:.2f}, class acc {row['class_acc']:.3f}, "
              f"{row['sample_s_per_image']:.4f} s/img", flush=True)

    runs_path = Path(args.runs).resolve()
    shown = runs_path.relative_to(Path.cwd()) if runs_path.is_relative_to(Path.cwd()) else Path(runs_path.name)
    meta = {"runs": str(shown), "run": run_dir.name, "n": args.n, "seed": args.seed, "checkpoint": args.checkpoint,
            "steps_trained": read_metrics(run_dir).get("steps"), "data": cfg.data.name, "split": evaluator.split,
            "extractor": evaluator.extractor.kind, "default_sampling": default, "device": device,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "minutes": (time.perf_counter() - start) / 60}
    result = {"meta": meta, "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mar_samplers.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "mar_samplers.md").write_text(markdown(result) + "\n")
    print(f"wrote {out / 'mar_samplers.md'} ({meta['minutes']:.1f} min)")
    return result


def markdown(result: dict[str, Any]) -> str:
    meta, rows = result["meta"], result["rows"]
    base = next((r for r in rows if r["default"] and r["sampling_seed"] == meta["seed"]), rows[0])
    lines = [
        "# MAR's reverse samplers: DDPM (the paper's default) vs DDIM", "",
        f"The `mar` run of `{meta['runs']}` (training seed {meta['seed']}, {meta['checkpoint']} checkpoint), sampled "
        f"after {meta['steps_trained']} training steps, {meta['n']} times per row from the same class-balanced labels "
        "and seed; FID / precision / recall against "
        f"the real `{meta['split']}` split with **{meta['extractor']}** features. MAR's other sampling options are "
        f"the run's (steps {meta['default_sampling']['steps']}, cfg {meta['default_sampling']['cfg']}, temperature "
        f"{meta['default_sampling']['temperature']}). Time and speed-up are per image on {meta['device']} "
        f"({meta['threads']} threads, torch {meta['torch']}); speed-up against the default row, measured in the "
        f"same run. The last row repeats the default under sampling seed {meta['seed'] + 1}: the gap between the two "
        "default rows is FID's sampling noise at this N.",
        "",
        "| sampler | diffusion steps | eta | FID | precision | recall | class acc | s / image | speed-up | "
        "sampling GFLOPs / image |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        eta = "" if r["eta"] is None else f"{r['eta']:g}"
        name = f"**{r['sampler']}** (default)" if r["default"] else r["sampler"]
        if r["sampling_seed"] != meta["seed"]:
            name += f", sampling seed {r['sampling_seed']}"
        lines.append(f"| {name} | {r['diffusion_steps']} | {eta} | {r['fid']:.2f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['class_acc']:.3f} | {r['sample_s_per_image']:.4f} | "
                     f"{base['sample_s_per_image'] / r['sample_s_per_image']:.2f}x | "
                     f"{r['flops_sample_per_image'] / 1e9:.2f} |")
    lines += ["", f"Wall time {meta['minutes']:.1f} min. `python benchmarks/mar_samplers.py` reruns it after "
              "`make compare`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

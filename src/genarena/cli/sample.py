"""``genarena-sample``: class-conditional samples from a trained generator.

    genarena-sample ckpt=runs/generator_var_mnist5k/<time> n=64 cfg=2.0 seed=0 out=samples/var

Writes ``grid.png`` (one row per class when labels are balanced) and ``samples.npz`` with
``images`` (uint8, N x H x W x C) and ``labels`` into ``out``. Sampling options not given fall back
to the run's ``generator.sampling`` config. A fixed seed (and batch size) gives identical images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from genarena.checkpoints import resolve_checkpoint
from genarena.cli.args import Arg, as_bool, optional, parse_args, run_tool
from genarena.errors import ConfigError
from genarena.generators import load_generator
from genarena.generators.generate import balanced_labels, generate
from genarena.lit.callbacks import save_rows

SAMPLING_KEYS = ("cfg", "cfg_schedule", "temperature", "top_k", "top_p", "steps", "choice_temperature",
                 "diffusion_steps")

SPEC = {
    "ckpt": Arg(str, ..., "generator checkpoint or run directory (required)"),
    "n": Arg(int, 64, "number of images"),
    "labels": Arg(str, "balanced", "'balanced' over the classes, or comma-separated class ids (cycled to n)"),
    "seed": Arg(int, 0, "random seed"),
    "out": Arg(optional(str), None, "output directory (default <run dir>/samples/sample_seed<seed>)"),
    "batch_size": Arg(int, 64, "images per sampling batch"),
    "ema": Arg(as_bool, True, "use the EMA weights when the run kept them"),
    "checkpoint": Arg(str, "best", "with a run directory: best (lowest val/loss) | last"),
    "device": Arg(optional(str), None, "cpu, cuda, cuda:1 ... (default: cuda when available)"),
    "cfg": Arg(optional(float), None, "guidance weight w (0 = none)"),
    "cfg_schedule": Arg(optional(str), None, "constant | linear"),
    "temperature": Arg(optional(float), None, "sampling temperature"),
    "top_k": Arg(optional(int), None, "top-k (discrete paradigms; 0 = off)"),
    "top_p": Arg(optional(float), None, "top-p (discrete paradigms; 0 = off)"),
    "steps": Arg(optional(int), None, "decoding steps (maskgit, mar)"),
    "choice_temperature": Arg(optional(float), None, "maskgit's annealed Gumbel temperature"),
    "diffusion_steps": Arg(optional(int), None, "mar's reverse diffusion steps per token"),
}


def resolve_labels(spec: str, n: int, num_classes: int) -> torch.Tensor:
    if spec == "balanced":
        return balanced_labels(n, num_classes)
    try:
        ids = [int(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"labels={spec!r}: expected 'balanced' or comma-separated class ids") from None
    bad = [i for i in ids if not 0 <= i < num_classes]
    if not ids or bad:
        raise ConfigError(f"labels={spec!r}: class ids must lie in [0, {num_classes - 1}]")
    return torch.tensor(ids).repeat(n // len(ids) + 1)[:n]


def sampling_options(run_sampling: dict, args: dict) -> dict:
    """The run's sampling config with the command line's overrides; rejects options the paradigm lacks."""
    out = dict(run_sampling)
    for key in SAMPLING_KEYS:
        if args.get(key) is not None:
            if key not in out:
                raise ConfigError(f"{key}= does not apply to this paradigm (it takes {', '.join(out)})")
            out[key] = args[key]
    return out


def save_samples(out: Path, images: torch.Tensor, labels: torch.Tensor, num_classes: int, meta: dict) -> None:
    """``grid.png`` (rows by label), ``samples.npz`` (uint8 N x H x W x C + labels) and ``meta.json``."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "samples.npz", images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
    rows = [images[labels == c] for c in range(num_classes) if (labels == c).any()]
    per_row = max(len(r) for r in rows)
    if per_row > 32 or len(rows) == 1:  # unbalanced: plain rows of 16
        rows = list(images.split(16))
    save_rows([r.float() / 127.5 - 1 for r in rows], out / "grid.png")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


def sample_main(argv: list[str] | None = None) -> Path:
    args = parse_args("genarena-sample", __doc__, SPEC, argv)
    ckpt = resolve_checkpoint(args["ckpt"], args["checkpoint"])
    generator, tokenizer, hp = load_generator(ckpt, use_ema=args["ema"])
    num_classes = hp["num_classes"]
    labels = resolve_labels(args["labels"], args["n"], num_classes)
    sampling = sampling_options(hp["generator"]["sampling"], args)
    result = generate(generator, tokenizer, labels, sampling, args["seed"], args["batch_size"], args["device"])
    run_dir = ckpt.parent.parent
    out = Path(args["out"]) if args["out"] else run_dir / "samples" / f"sample_seed{args['seed']}"
    meta = {"ckpt": str(ckpt), "paradigm": hp["generator"]["name"], "n": len(labels), "seed": args["seed"],
            "sampling": sampling, "weights": hp["weights"], "seconds_per_image": result.seconds_per_image}
    save_samples(out, result.images, result.labels, num_classes, meta)
    print(f"wrote {len(labels)} samples to {out} ({result.seconds_per_image:.4f} s/image)")
    return out


def main() -> None:
    run_tool("genarena-sample", sample_main)


if __name__ == "__main__":
    main()

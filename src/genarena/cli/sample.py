"""``genarena-sample``: class-conditional samples from a trained generator (a Hydra app over ``conf/sample.yaml``).

    genarena-sample ckpt=runs/generator_var_mnist5k/<time> n=64 seed=0 sampling.cfg=2.0 out=samples/var

Writes ``grid.png``, ``samples.npz`` (uint8 N x H x W x C and labels; ``format=adm``: ADM's evaluator layout,
``arr_0`` uint8 N x H x W x 3 and ``arr_1``) and ``meta.json`` into ``out``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from genarena.cli.app import run_app
from genarena.config import (
    CHECKPOINT_SELECTIONS,
    SAMPLE_FORMATS,
    check_choice,
    check_known_keys,
    check_range,
    check_sampling,
    to_dict,
)
from genarena.runs import check_writable_dir


def check_options(cfg: DictConfig) -> None:
    """Everything checkable before the checkpoint is loaded: keys, ranges, sampling values, the output folder."""
    check_known_keys(cfg)
    check_choice("checkpoint", cfg.checkpoint, CHECKPOINT_SELECTIONS)
    check_choice("format", cfg.format, SAMPLE_FORMATS)
    check_range("n", cfg.n, 1, accepted="at least 1 sample")
    check_range("batch_size", cfg.batch_size, 1, accepted="at least 1 sample per batch")
    check_sampling("sampling", cfg.sampling)
    if cfg.out:
        check_writable_dir("out", cfg.out)


def sample(cfg: DictConfig) -> Path:
    check_options(cfg)
    from genarena.api import load  # lazy: torch loads only when sampling starts
    from genarena.image_files import save_samples  # lazy: as above

    run = load(cfg.ckpt, checkpoint=cfg.checkpoint, ema=cfg.ema, device=cfg.device,
               allow_unsafe_load=cfg.allow_unsafe_load)
    labels = run.labels(cfg.n, cfg.labels if isinstance(cfg.labels, str) else list(cfg.labels))
    result = run.generate(labels, seed=cfg.seed, batch_size=cfg.batch_size, progress=True, **to_dict(cfg.sampling))
    out = Path(cfg.out) if cfg.out else run.checkpoint.parent.parent / "samples" / f"sample_seed{cfg.seed}"
    meta = {"ckpt": str(run.checkpoint), "paradigm": run.config.generator.name, "n": len(labels), "seed": cfg.seed,
            "sampling": {**run.sampling, **{k: v for k, v in to_dict(cfg.sampling).items() if v is not None}},
            "weights": run.config.weights, "seconds_per_image": result.seconds_per_image}
    save_samples(out, result.images, result.labels, run.num_classes, meta, fmt=cfg.format)
    print(f"wrote {len(labels)} samples to {out} ({result.seconds_per_image:.4f} s/image)")
    return out


def main() -> None:
    run_app("genarena-sample", "sample", sample)


if __name__ == "__main__":
    main()

"""``genarena-edit``: zero-shot in-painting, out-painting and class relabelling with a trained generator (a Hydra
app over ``conf/edit.yaml``; the work is :mod:`genarena.editing`).

    genarena-edit ckpt=runs/generator_var_mnist5k/<time> images=val n=16 mask=center
    genarena-edit ckpt=<run> mask=right relabel=3                # out-paint the right half as a 3
    genarena-edit ckpt=<run> "mask='box:4,4,20,20'"              # a pixel box, quoted for Hydra

Writes ``edits.npz`` (completions and labels, originals, masks), ``grid.png`` (original / masked / completion rows)
and ``meta.json`` into ``out``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from genarena.cli.app import run_app
from genarena.config import (
    CHECKPOINT_SELECTIONS,
    check_choice,
    check_known_keys,
    check_range,
    check_sampling,
    check_seed,
    to_dict,
)
from genarena.runs import check_writable_dir


def check_options(cfg: DictConfig) -> None:
    """Everything checkable before the checkpoint is loaded: keys, ranges, the mask's form, the output folder."""
    from genarena.editing import check_mask_spec  # lazy: the editing library imports torch

    check_known_keys(cfg)
    check_choice("checkpoint", cfg.checkpoint, CHECKPOINT_SELECTIONS)
    check_range("n", cfg.n, 1, accepted="at least 1 image")
    check_range("batch_size", cfg.batch_size, 1, accepted="at least 1 image per batch")
    check_seed("seed", cfg.seed)
    if cfg.relabel is not None:
        check_range("relabel", cfg.relabel, 0, accepted="null (each image's own label) or a class id >= 0")
    check_mask_spec(cfg.mask)
    check_sampling("sampling", cfg.sampling)
    if cfg.out:
        check_writable_dir("out", cfg.out)


def edit(cfg: DictConfig) -> Path:
    check_options(cfg)
    import torch  # lazy: torch loads only when editing starts

    from genarena.api import load  # lazy: as above
    from genarena.editing import complete_images, load_edit_images, mask_tag, pixel_mask, save_edits  # lazy: as above
    from genarena.errors import ConfigError  # lazy: as above
    from genarena.generators.generate import merge_sampling  # lazy: as above

    run = load(cfg.ckpt, checkpoint=cfg.checkpoint, ema=cfg.ema, device=cfg.device,
               allow_unsafe_load=cfg.allow_unsafe_load)
    if cfg.relabel is not None and cfg.relabel >= run.num_classes:
        raise ConfigError(f"relabel={cfg.relabel} is not accepted; a class id in [0, {run.num_classes - 1}]")
    sampling = merge_sampling(run.sampling, to_dict(cfg.sampling))
    images, source_labels = load_edit_images(cfg.images, run.config.data, cfg.n)
    if cfg.relabel is None and source_labels is None:
        raise ConfigError(f"images={cfg.images} carry no labels; give relabel=<class id> to complete them as a class")
    labels = torch.full((len(images),), cfg.relabel) if cfg.relabel is not None else source_labels
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < run.num_classes:
        raise ConfigError(f"images={cfg.images} have labels in [{int(labels.min())}, {int(labels.max())}] but the run "
                          f"models classes 0..{run.num_classes - 1}; give relabel=<class id> or fix the labels")
    known = pixel_mask(cfg.mask, tuple(images.shape[-2:]))
    edited = complete_images(run.generator, run.tokenizer, images, labels, known, sampling, cfg.seed, cfg.batch_size,
                             run.device, paste=cfg.paste, progress=True)
    out = Path(cfg.out) if cfg.out else run.checkpoint.parent.parent / "edits" / f"{mask_tag(cfg.mask)}_seed{cfg.seed}"
    meta = {"ckpt": str(run.checkpoint), "paradigm": run.config.generator.name, "images": cfg.images,
            "n": len(images), "mask": cfg.mask, "known_tokens": int(edited.known_tokens.sum()),
            "tokens": edited.known_tokens.numel(), "relabel": cfg.relabel, "paste": cfg.paste, "seed": cfg.seed,
            "sampling": sampling, "weights": run.config.weights, "seconds_per_image": edited.seconds_per_image}
    save_edits(out, edited, meta, source_labels)
    print(f"wrote {len(images)} edits to {out} ({int(edited.known_tokens.sum())} of {edited.known_tokens.numel()} "
          f"tokens kept, {edited.seconds_per_image:.4f} s/image)")
    return out


def main() -> None:
    run_app("genarena-edit", "edit", edit)


if __name__ == "__main__":
    main()

"""Evaluating a generator run or saved images: what ``genarena-eval``, ``genarena-compare`` and
:func:`genarena.evaluate` share.

A run is sampled (``eval.num_samples`` images, labels balanced over the classes, ``eval.seed``) at the
checkpoint ``eval.checkpoint`` selects and compared with its own data's ``eval.split``; saved images are
compared with the split of ``cfg.data``. Results are flat scalars (``fid``, ``isc_mean``, ``kid_mean``,
``precision``, ``recall``, ``class_acc``, and ``eval_*`` keys naming what was compared), written to
``metrics.json`` in the output folder and, for a run, merged into the run's own ``metrics.json`` and
logged into its W&B run (resumed by id, on its step axis, with a sample grid).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genarena.checkpoints import resolve_checkpoint
from genarena.config import check_eval_options
from genarena.data.sources import check_imagefolder_root
from genarena.errors import ConfigError
from genarena.generators import Generator, load_generator
from genarena.generators.generate import Generated, balanced_labels, generate, merge_sampling
from genarena.image_files import load_images, save_samples
from genarena.lit.wandb_results import log_evaluation
from genarena.metrics.fidelity import Evaluator, fid_statistics, write_fid_statistics
from genarena.runs import EVAL_DIR, read_metrics, update_metrics, write_metrics
from genarena.tokenizers import Tokenizer
from genarena.training.classifier import classifier_provider

log = logging.getLogger("genarena")


def make_evaluator(cfg: DictConfig, real: tuple[Tensor, Tensor] | None = None) -> Evaluator:
    """An :class:`Evaluator` of ``cfg.data`` under ``cfg.eval`` whose domain classifier is trained when missing."""
    check_eval_options(cfg.eval)
    return Evaluator(cfg, classifier_provider(cfg), real=real)


def score_generator(generator: Generator, tokenizer: Tokenizer, hp: Mapping[str, Any], evaluator: Evaluator,
                    sampling: dict[str, Any], n: int, seed: int, batch_size: int,
                    device: str | None = None) -> tuple[dict[str, Any], Generated]:
    """Sample ``n`` images (labels balanced over the classes, fixed ``seed``) and score them.

    Returns ``(scalars, Generated)``: the evaluator's metrics plus sampling time per image, sampling
    FLOPs per image, sampling steps and the sampling options used.
    """
    labels = balanced_labels(n, hp["num_classes"])
    log.info("sampling %d images (%s, seed %d, %s)", len(labels), hp["generator"]["name"], seed, sampling)
    result = generate(generator, tokenizer, labels, sampling, seed, batch_size, device)
    scalars = evaluator(result.images, result.labels)
    scalars.update({
        "eval_seed": seed, "eval_weights": hp["weights"],
        **{f"eval_sampling_{k}": v for k, v in sampling.items()},
        "sample_s_per_image": result.seconds_per_image,
        "flops_sample_per_image": generator.flops_per_image(False, **sampling),
        "sampling_steps": generator.sampling_steps(**sampling),
    })
    return scalars, result


def default_out(base: Path, scalars: Mapping[str, Any], seed: int) -> Path:
    """``<base>/eval/<extractor>_n<N>_seed<seed>``: where an evaluation's ``metrics.json`` goes by default."""
    return base / EVAL_DIR / f"{scalars['eval_extractor']}_n{scalars['eval_n']}_seed{seed}"


def apply_data_overrides(cfg: DictConfig, data: Mapping[str, Any]) -> None:
    """``{key: value}`` over ``cfg.data`` (a run's data config); unknown keys are an error."""
    for key, value in data.items():
        if key not in cfg.data:
            raise ConfigError(f"data.{key}: the run's data config has no such key (keys: {', '.join(cfg.data)})")
        OmegaConf.update(cfg, f"data.{key}", value, merge=False)


def evaluate_run(cfg: DictConfig, ckpt: str | Path, *, sampling: Mapping[str, Any] | None = None, ema: bool = True,
                 device: str | None = None, out: str | Path | None = None,
                 data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Sample a generator run (directory or checkpoint) and score it against its own data (``data`` overrides
    keys of it). ``sampling`` overrides the run's sampling options. Returns the scalars and ``metrics_path``."""
    check_eval_options(cfg.eval)
    cfg = cfg.copy()
    path = resolve_checkpoint(ckpt, cfg.eval.checkpoint)
    generator, tokenizer, hp = load_generator(path, use_ema=ema, allow_unsafe=cfg.allow_unsafe_load)
    OmegaConf.set_struct(cfg, False)
    cfg.data = OmegaConf.create(hp["data"])
    apply_data_overrides(cfg, data or {})
    if cfg.data.name == "imagefolder":  # a missing data root stops before the (slow) sampling, not after it
        check_imagefolder_root(cfg.data)
    evaluator = make_evaluator(cfg)  # resolves the extractor before the (slow) sampling
    ev = cfg.eval
    options = merge_sampling(hp["generator"]["sampling"], dict(sampling or {}))
    scalars, result = score_generator(generator, tokenizer, hp, evaluator, options, ev.num_samples, ev.seed,
                                      ev.batch_size, device)
    scalars["eval_checkpoint"] = path.stem  # best / last / the file given
    in_run = path.parent.name == "checkpoints"
    run_dir = path.parent.parent if in_run else path.parent
    out = Path(out) if out else default_out(run_dir, scalars, ev.seed)
    metrics_path = write_metrics(out, scalars)
    save_samples(out, result.images, result.labels, hp["num_classes"],
                 {"ckpt": str(path), "n": len(result.labels), "seed": ev.seed, "sampling": options,
                  "weights": hp["weights"]})
    if in_run and (run_dir / "metrics.json").is_file():
        update_metrics(run_dir, scalars)
        log_evaluation(run_dir, scalars, read_metrics(run_dir), image=out / "grid.png")
    return {**scalars, "metrics_path": str(metrics_path)}


def evaluate_images(cfg: DictConfig, images: str | Path, *, n: int | None = None,
                    out: str | Path | None = None) -> dict[str, Any]:
    """Score saved images (an .npz or a folder of PNGs; the first ``n``, default all) against ``cfg.data``'s
    ``eval.split``; class accuracy when the .npz has labels. Returns the scalars and ``metrics_path``."""
    check_eval_options(cfg.eval)
    x, labels = load_images(images, cfg.data.channels)
    if n is not None:
        if not 0 < n <= len(x):
            raise ConfigError(f"n={n} but images={images} holds {len(x)} images; give 1 <= n <= {len(x)}")
        x, labels = x[:n], None if labels is None else labels[:n]
    scalars = make_evaluator(cfg)(x, labels)
    scalars["eval_seed"] = cfg.eval.seed
    src = Path(images).expanduser()
    out = Path(out) if out else default_out(src if src.is_dir() else src.parent, scalars, cfg.eval.seed)
    return {**scalars, "metrics_path": str(write_metrics(out, scalars))}


def write_reference_statistics(cfg: DictConfig, path: str | Path) -> dict[str, Any]:
    """FID statistics (``mu``, ``sigma``) of ``cfg.data``'s ``eval.split`` with the evaluation's extractor, written to
    ``path`` for ``eval.fid_statistics_file``; returns what was written."""
    check_eval_options(cfg.eval)
    evaluator = make_evaluator(cfg)
    real, _ = evaluator.real
    stats = fid_statistics(real, evaluator.extractor, cfg.eval.batch_size)
    source = f"{cfg.data.name} {cfg.eval.split} ({cfg.data.resolution}px)"
    out = write_fid_statistics(path, stats, evaluator.extractor, len(real), source)
    return {"path": str(out), "n": len(real), "source": source, "extractor": evaluator.extractor.cache_tag,
            "dim": int(stats["mu"].shape[0])}

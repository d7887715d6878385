"""The training tasks: a tokenizer (stage 1) and a generator against a frozen tokenizer (stage 2).

Each takes the composed config, the run directory, the logger and the checkpoint to resume from (None: from
the start), trains with the Trainer of :func:`~genarena.training.trainer.build_trainer`, saves
``checkpoints/last.ckpt`` and returns the run's scalars (what ``metrics.json`` records; ``train_time_s`` adds
up every session of a resumed run). The domain classifier task lives in
:mod:`genarena.training.classifier`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from genarena.config import to_dict
from genarena.data import ImageDataModule
from genarena.data.token_cache import TokenDataModule
from genarena.errors import ConfigError
from genarena.generators import generator_class
from genarena.generators.base import check_tokenizer_kind
from genarena.lit.evaluation import PeriodicEvalCallback
from genarena.lit.generator_module import GeneratorModule
from genarena.lit.resume import training_time_s
from genarena.lit.tokenizer_module import TokenizerModule
from genarena.lit.wandb_logging import follow_trainer
from genarena.metrics.fidelity import Evaluator
from genarena.tokenizers import load_tokenizer
from genarena.training.classifier import classifier_provider, final_scalars, num_params, train_classifier
from genarena.training.trainer import build_callbacks, build_trainer


def train_tokenizer(cfg: DictConfig, run_dir: Path, logger, ckpt_path: str | None = None) -> dict[str, Any]:
    """Train ``cfg.tokenizer`` on ``cfg.data``; returns PSNR, codebook usage, parameters, steps, time."""
    dm = ImageDataModule(cfg.data, cfg.seed)
    dm.setup()
    val = dm.dataset("val")
    grid_images = torch.stack([val[i][0] for i in range(min(8, len(val)))])
    module = TokenizerModule(to_dict(cfg.tokenizer), to_dict(cfg.data), cfg.optim, cfg.trainer.max_steps,
                             dm.num_classes, grid_images)
    if cfg.trainer.compile:
        module.tokenizer.compile()
    trainer = build_trainer(cfg, run_dir, logger)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=not cfg.allow_unsafe_load)
    wall = training_time_s(trainer)
    fitted = module.calibrate(dm.train_dataloader())
    final = final_scalars(trainer.validate(module, datamodule=dm, verbose=False))
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return {"tokenizer": cfg.tokenizer.name, "params": num_params(module.tokenizer), "train_time_s": wall,
            "resolution": cfg.data.resolution, "channels": cfg.data.channels, "steps": trainer.global_step,
            **module.tokenizer.describe(), **final, **fitted}


def check_tokenizer_matches_data(tok_hp: dict[str, Any], data_cfg: DictConfig) -> None:
    td = tok_hp["data"]
    if (td["resolution"], td["channels"]) != (data_cfg.resolution, data_cfg.channels):
        raise ConfigError(
            f"tokenizer checkpoint {tok_hp['path']} was trained on {td['resolution']}px images with "
            f"{td['channels']} channel(s) ({td['name']}), but data={data_cfg.name} gives {data_cfg.resolution}px "
            f"with {data_cfg.channels}; train a tokenizer on this data or set data.resolution / data.channels")


def train_generator(cfg: DictConfig, run_dir: Path, logger, ckpt_path: str | None = None) -> dict[str, Any]:
    """Train ``cfg.generator`` against the frozen ``cfg.tokenizer.ckpt``; returns the run's scaling coordinates
    (parameters, FLOPs, tokens seen, losses, time)."""
    tokenizer, tok_hp = load_tokenizer(cfg.tokenizer.ckpt, allow_unsafe=cfg.allow_unsafe_load)
    paradigm, _ = generator_class(to_dict(cfg.generator))
    check_tokenizer_kind(cfg.generator.name, paradigm.requires, tokenizer, paradigm.head_kind)  # before encoding
    check_tokenizer_matches_data(tok_hp, cfg.data)
    dm = TokenDataModule(cfg.data, tokenizer, tok_hp["path"], cfg.paths.cache_dir, cfg.seed)
    dm.setup()
    module = GeneratorModule(to_dict(cfg.generator), tokenizer, tok_hp, to_dict(cfg.data), dm.num_classes, cfg.optim,
                             cfg.trainer.max_steps, cfg.log.grid_size, cfg.seed)
    module.compile_loss = bool(cfg.trainer.compile)  # the loss is what a training step runs (not forward)
    callbacks = build_callbacks(cfg, run_dir, has_logger=bool(logger))
    for cb in callbacks:
        if isinstance(cb, PeriodicEvalCallback) and cb.active and rank_zero_only.rank == 0:
            cb.attach(Evaluator(cfg, classifier_provider(cfg)))  # resolves the extractor before training starts
    trainer = build_trainer(cfg, run_dir, logger, callbacks)
    images_per_step = cfg.data.batch_size * cfg.trainer.accumulate_grad_batches * trainer.world_size
    follow_trainer(trainer, flops_per_step=module.generator.flops_per_image(True) * images_per_step)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=not cfg.allow_unsafe_load)
    wall = training_time_s(trainer)
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    gen, sampling = module.generator, module.sampling
    images_seen = trainer.global_step * images_per_step
    out: dict[str, Any] = {
        "paradigm": gen.name, "order": gen.order, "head": gen.head_kind, "cell": f"{gen.order}-{gen.head_kind}",
        "tokenizer": tok_hp["tokenizer"]["name"], "tokenizer_ckpt": tok_hp["path"],
        "depth": gen.depth, "width": gen.width, "heads": gen.heads,
        "params": gen.num_params(), "params_non_embedding": gen.num_params(non_embedding=True),
        "match_params": cfg.get("match_params"),
        "tokens_per_image": gen.tokens_per_image, "sampling_steps": gen.sampling_steps(**sampling),
        "flops_train_per_image": gen.flops_per_image(True),
        "flops_sample_per_image": gen.flops_per_image(False, **sampling),
        "steps": trainer.global_step, "batch_size": cfg.data.batch_size, "images_seen": images_seen,
        "tokens_seen": images_seen * gen.tokens_per_image, "train_time_s": wall,
        "val_loss_best": module.best_val_loss, "val_loss_best_step": module.best_val_step,
    }
    out["flops_train_total"] = out["flops_train_per_image"] * images_seen
    out.update({f"val_{k}": v for k, v in module.last_val.items()})
    return out


TASK_FUNCTIONS = {"tokenizer": train_tokenizer, "classifier": train_classifier, "generator": train_generator}

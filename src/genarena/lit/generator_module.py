"""Stage 2: one LightningModule for all four paradigms, trained against a frozen tokenizer.

The checkpoint is self-contained (tokenizer config and weights travel with it), so
:func:`genarena.generators.load_generator` can rebuild everything from the file alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genarena.data.token_cache import TokenDataModule
from genarena.errors import ConfigError
from genarena.generators import VAR, build_generator
from genarena.generators.generate import balanced_labels
from genarena.lit.callbacks import ImageGridCallback
from genarena.lit.optim import build_optimizer
from genarena.tokenizers import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


class GeneratorModule(L.LightningModule):
    def __init__(self, generator_cfg: dict[str, Any], tokenizer: Tokenizer, tokenizer_hp: dict[str, Any],
                 data_cfg: dict[str, Any], num_classes: int, optim_cfg, total_steps: int, grid_size: int,
                 seed: int) -> None:
        super().__init__()
        self.save_hyperparameters({"role": "generator", "generator": generator_cfg,
                                   "tokenizer": tokenizer_hp["tokenizer"], "tokenizer_ckpt": tokenizer_hp.get("path"),
                                   "data": data_cfg, "num_classes": num_classes})
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.generator = build_generator(generator_cfg, tokenizer, num_classes)
        self.sampling = dict(generator_cfg["sampling"])
        self.ema_decay = optim_cfg.ema_decay
        self.ema_generator = None
        if self.ema_decay:
            self.ema_generator = build_generator(generator_cfg, tokenizer, num_classes).requires_grad_(False)
            self.ema_generator.load_state_dict(self.generator.state_dict())
        self.optim_cfg, self.total_steps = optim_cfg, total_steps
        self.grid_size, self.seed, self.num_classes = grid_size, seed, num_classes
        self.best_val_loss, self.best_val_step = float("inf"), -1
        self._val_sum: dict[str, float] = {}
        self._val_count = 0

    # the tokenizer stays frozen in eval mode whatever Lightning toggles
    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()
        if self.ema_generator is not None:
            self.ema_generator.eval()
        return self

    @property
    def sampler(self):
        """The weights used for sampling: the EMA copy when kept, else the trained ones."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def configure_optimizers(self):
        opt, sched = build_optimizer(self.generator, self.optim_cfg, self.total_steps, trainer=self._trainer)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self.optim_cfg.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.optim_cfg.grad_clip, gradient_clip_algorithm="norm")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        tokens, labels = batch
        out = self.generator.loss(tokens, labels)
        self.log_dict({f"train/{k}": v for k, v in out.items()})
        self.log("loss", out["loss"].detach(), prog_bar=True, logger=False)
        return out["loss"]

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema_generator is not None:
            for e, p in zip(self.ema_generator.parameters(), self.generator.parameters()):
                e.lerp_(p.detach(), 1 - self.ema_decay)

    # validation: masks / noise drawn from a fixed seed per batch, so curves are comparable
    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = {}, 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        tokens, labels = batch
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + 1000 + batch_idx)
            out = self.generator.loss(tokens, labels)
        n = len(labels)
        for k, v in out.items():
            self._val_sum[k] = self._val_sum.get(k, 0.0) + float(v) * n
        self._val_count += n
        self.log("val/loss", out["loss"], prog_bar=True, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        if not self._val_count:
            return
        means = {k: v / self._val_count for k, v in self._val_sum.items()}
        if "acc" in means:
            means["token_error"] = 1 - means["acc"]
        self.log_dict({f"val/{k}": v for k, v in means.items() if k != "loss"})
        if means["loss"] < self.best_val_loss:
            self.best_val_loss, self.best_val_step = means["loss"], self.global_step
        self.log("val/loss_best", self.best_val_loss)
        self.last_val = means

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_val"] = (self.best_val_loss, self.best_val_step)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_val_loss, self.best_val_step = checkpoint.get("best_val", (float("inf"), -1))

    # sample grids
    @torch.no_grad()
    def image_grids(self) -> dict[str, list[Tensor]]:
        per_class = max(1, self.grid_size // self.num_classes)
        labels = balanced_labels(per_class * self.num_classes, self.num_classes, self.device)
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        images = self.tokenizer.decode(self.sampler.sample(labels, generator=g, **self.sampling))
        grids = {"samples": list(images.split(per_class))}
        if isinstance(self.sampler, VAR):
            first = labels[:: per_class][: 8]
            g = torch.Generator(device=self.device).manual_seed(self.seed)
            grids["coarse_to_fine"] = self.sampler.sample_progression(first, generator=g, **self.sampling)
        return grids


def check_tokenizer_matches_data(tok_hp: dict[str, Any], data_cfg: DictConfig) -> None:
    td = tok_hp["data"]
    if (td["resolution"], td["channels"]) != (data_cfg.resolution, data_cfg.channels):
        raise ConfigError(
            f"tokenizer checkpoint {tok_hp['path']} was trained on {td['resolution']}px images with "
            f"{td['channels']} channel(s) ({td['name']}), but data={data_cfg.name} gives {data_cfg.resolution}px "
            f"with {data_cfg.channels}; train a tokenizer on this data or set data.resolution / data.channels")


def fit_generator(cfg: DictConfig, run_dir: Path, logger, build_trainer) -> dict[str, Any]:
    """Train ``cfg.generator`` against ``cfg.tokenizer.ckpt``; returns the run's scalars."""
    tokenizer, tok_hp = load_tokenizer(cfg.tokenizer.ckpt)
    check_tokenizer_matches_data(tok_hp, cfg.data)
    dm = TokenDataModule(cfg.data, tokenizer, tok_hp["path"], cfg.paths.cache_dir)
    dm.setup()
    gen_cfg = OmegaConf.to_container(cfg.generator, resolve=True, enum_to_str=True)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    module = GeneratorModule(gen_cfg, tokenizer, tok_hp, data_cfg, dm.num_classes, cfg.optim,
                             cfg.trainer.max_steps, cfg.log.grid_size, cfg.seed)
    if cfg.trainer.compile:
        module.generator.compile()
    callbacks = [ImageGridCallback(cfg.log.sample_every_n_steps, run_dir / "samples")]
    from genarena.lit.evaluation import periodic_eval_callback

    periodic = periodic_eval_callback(cfg, run_dir)
    if periodic is not None:
        callbacks.append(periodic)
    trainer = build_trainer(cfg, run_dir, logger, callbacks, monitor="val/loss")
    t0 = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume)
    wall = time.time() - t0
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    gen = module.generator
    sampling = module.sampling
    images_seen = trainer.global_step * cfg.data.batch_size * trainer.world_size
    out: dict[str, Any] = {
        "paradigm": gen.name, "tokenizer": tok_hp["tokenizer"]["name"], "tokenizer_ckpt": tok_hp["path"],
        "depth": gen.depth, "width": gen.width, "heads": gen.heads,
        "params": gen.num_params(), "params_non_embedding": gen.num_params(non_embedding=True),
        "tokens_per_image": gen.tokens_per_image, "sampling_steps": gen.sampling_steps(**sampling),
        "flops_train_per_image": gen.flops_per_image(True),
        "flops_sample_per_image": gen.flops_per_image(False, **sampling),
        "steps": trainer.global_step, "batch_size": cfg.data.batch_size, "images_seen": images_seen,
        "tokens_seen": images_seen * gen.tokens_per_image, "train_time_s": wall,
        "val_loss_best": module.best_val_loss, "val_loss_best_step": module.best_val_step,
    }
    out["flops_train_total"] = out["flops_train_per_image"] * images_seen
    out.update({f"val_{k}": v for k, v in getattr(module, "last_val", {}).items()})
    return out

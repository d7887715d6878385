"""Stage 2: one LightningModule for every paradigm, trained against a frozen tokenizer.

The module owns optimisation, validation metrics and checkpoint contents; everything paradigm-specific
is behind the :class:`~genarena.generators.base.Generator` interface. The checkpoint is self-contained
(tokenizer config and weights travel with it), so :func:`genarena.generators.load_generator` rebuilds
everything from the file alone. Weight averaging (EMA) is Lightning's ``EMAWeightAveraging`` callback
(``callbacks.ema``): it validates and checkpoints the averaged weights.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from genarena.generators import build_generator
from genarena.generators.generate import balanced_labels
from genarena.lit.guard import any_rank, check_grad_norm, check_losses, check_weights
from genarena.lit.optim import build_optimizer
from genarena.tokenizers import Tokenizer


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
        self.optim_cfg, self.total_steps = optim_cfg, total_steps
        self.grid_size, self.seed, self.num_classes = grid_size, seed, num_classes
        self.best_val_loss, self.best_val_step = float("inf"), -1
        self.val_means: dict[str, MeanMetric] = {}  # created on first use: the keys come from the paradigm's loss()
        self.last_val: dict[str, float] = {}
        self.compile_loss, self._compiled_loss, self._compiled_for = False, None, None

    def generator_loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """``generator.loss`` (what training and validation run), through ``torch.compile`` with ``trainer.compile``:
        ``nn.Module.compile`` would only wrap ``forward``, which the training step never calls. Compiled per generator
        instance, so a deep copy of the module (weight averaging) compiles its own."""
        if not self.compile_loss:
            return self.generator.loss(tokens, labels)
        if self._compiled_loss is None or self._compiled_for != id(self.generator):
            self._compiled_loss, self._compiled_for = torch.compile(self.generator.loss), id(self.generator)
        return self._compiled_loss(tokens, labels)

    # the tokenizer stays frozen in eval mode whatever Lightning toggles
    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()
        return self

    def configure_optimizers(self):
        opt, sched = build_optimizer(self.generator, self.optim_cfg, self.total_steps, trainer=self._trainer)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if self.optim_cfg.grad_clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=self.optim_cfg.grad_clip, gradient_clip_algorithm="norm")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        tokens, labels = batch
        out = self.generator_loss(tokens, labels)
        check_losses(self.global_step, {f"train/{k}": v for k, v in out.items()}, any_rank(self._trainer))
        self.log_dict({f"train/{k}": v for k, v in out.items()})
        self.log("loss", out["loss"].detach(), prog_bar=True, logger=False)
        return out["loss"]

    # validation: masks / noise drawn from a fixed seed per batch, so curves are comparable; means over the
    # whole split (every rank's share, torchmetrics syncs them)
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        tokens, labels = batch
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed + 1000 + batch_idx)
            out = self.generator_loss(tokens, labels)
        for k, v in out.items():
            if k not in self.val_means:
                self.val_means[k] = MeanMetric(sync_on_compute=True).to(self.device)
            self.val_means[k].update(v.detach().float(), weight=len(labels))

    def on_validation_epoch_end(self) -> None:
        if not self.val_means:
            return
        means = {k: float(m.compute()) for k, m in self.val_means.items()}
        for m in self.val_means.values():
            m.reset()
        if "acc" in means:
            means["token_error"] = 1 - means["acc"]
        self.log_dict({f"val/{k}": v for k, v in means.items() if k != "loss"})
        self.log("val/loss", means["loss"], prog_bar=True)
        if means["loss"] < self.best_val_loss:
            self.best_val_loss, self.best_val_step = means["loss"], self.global_step
        self.log("val/loss_best", self.best_val_loss)
        self.last_val = means

    def on_before_optimizer_step(self, optimizer) -> None:
        norm = check_grad_norm(self.global_step, self.generator.parameters(), self.trainer.precision,
                               ranks=any_rank(self.trainer))
        self.log("train/grad_norm", norm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_weights(self.global_step, checkpoint["state_dict"])
        checkpoint["best_val"] = [self.best_val_loss, self.best_val_step]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.best_val_loss, self.best_val_step = checkpoint.get("best_val", (float("inf"), -1))

    # sample grids (genarena.lit.callbacks.ImageGridCallback)
    @torch.no_grad()
    def image_grids(self) -> dict[str, list[Tensor]]:
        """Rows of samples, one per class, plus whatever extra grids the paradigm shows."""
        per_class = max(1, self.grid_size // self.num_classes)
        labels = balanced_labels(per_class * self.num_classes, self.num_classes, self.device)
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        images = self.tokenizer.decode(self.generator.sample(labels, generator=g, **self.sampling))
        grids = {"samples": list(images.split(per_class))}
        g = torch.Generator(device=self.device).manual_seed(self.seed)
        grids.update(self.generator.extra_image_grids(labels[::per_class][:8], generator=g, **self.sampling))
        return grids

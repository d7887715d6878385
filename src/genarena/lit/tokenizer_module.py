"""Stage 1: train a tokenizer (reconstruction + bottleneck loss, optional perceptual and PatchGAN terms)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric

from genarena.lit.guard import any_rank, check_grad_norm, check_losses, check_weights
from genarena.lit.optim import build_optimizer
from genarena.tokenizers import build_tokenizer
from genarena.tokenizers.losses import (
    PatchDiscriminator,
    build_perceptual_loss,
    hinge_d_loss,
    hinge_g_loss,
    reconstruction_loss,
)


def psnr(recon: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of images in ``[-1, 1]`` measured in ``[0, 1]``: ``(B,)``."""
    mse = ((recon - target) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


class TokenizerModule(L.LightningModule):
    """Owns the optimisation of one tokenizer. Checkpoints carry ``role='tokenizer'`` and the configs
    needed to rebuild it (:func:`genarena.tokenizers.load_tokenizer`)."""

    def __init__(self, tokenizer_cfg: dict[str, Any], data_cfg: dict[str, Any], optim_cfg, total_steps: int,
                 num_classes: int, grid_images: Tensor | None = None) -> None:
        super().__init__()
        self.save_hyperparameters({"role": "tokenizer", "tokenizer": tokenizer_cfg, "data": data_cfg,
                                   "num_classes": num_classes})
        self.tokenizer = build_tokenizer(tokenizer_cfg, data_cfg["channels"], data_cfg["resolution"])
        self.optim_cfg, self.total_steps = optim_cfg, total_steps
        self.recon_kind = tokenizer_cfg["recon_loss"]
        p = tokenizer_cfg["perceptual"]
        self.perceptual_weight = p["weight"]
        self.perceptual = build_perceptual_loss(p["weight"], p["weights_path"])
        d = tokenizer_cfg["discriminator"]
        self.disc_weight, self.disc_start, self.disc_lr = d["weight"], d["start_step"], d["lr"]
        self.disc = PatchDiscriminator(data_cfg["channels"], d["channels"], d["layers"]) if d["weight"] > 0 else None
        self.disc_opt: torch.optim.Optimizer | None = None
        self.automatic_optimization = False
        self._val_counts: Tensor | None = None
        self.grid_images = grid_images  # (n, C, H, W) fixed validation images for reconstruction grids
        # validation means over the whole split (every rank's share: torchmetrics syncs them)
        self.val_loss, self.val_psnr, self.val_mse01 = MeanMetric(), MeanMetric(), MeanMetric()

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        opt, sched = build_optimizer(self.tokenizer, self.optim_cfg, self.total_steps, trainer=self._trainer)
        if self.disc is not None:  # a plain optimizer: Lightning's step counter counts the tokenizer's steps only
            self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=self.disc_lr, betas=(0.5, 0.9))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_weights(self.global_step, checkpoint["state_dict"])
        if self.disc_opt is not None:
            checkpoint["disc_optimizer"] = self.disc_opt.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._disc_opt_state = checkpoint.get("disc_optimizer")

    def on_fit_start(self) -> None:
        state = getattr(self, "_disc_opt_state", None)
        if state is not None and self.disc_opt is not None:
            self.disc_opt.load_state_dict(state)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, _ = batch
        step, ranks = self.global_step, any_rank(self.trainer)  # opt.step() below advances the step
        opt, sched = self.optimizers(), self.lr_schedulers()
        recon, aux = self.tokenizer(x)
        rec = reconstruction_loss(recon, x, self.recon_kind)
        loss = rec + aux["loss"]
        logs = {"train/rec_loss": rec.detach(), "train/aux_loss": aux["loss"].detach()}
        if self.perceptual is not None:
            perc = self.perceptual(recon, x)
            loss = loss + self.perceptual_weight * perc
            logs["train/perceptual"] = perc.detach()
        gan_on = self.disc is not None and self.global_step >= self.disc_start
        if gan_on:
            g = hinge_g_loss(self.disc(recon))
            loss = loss + self.disc_weight * g
            logs["train/g_loss"] = g.detach()
        check_losses(step, {"train/loss": loss, **logs}, ranks)  # manual optimisation: before backward and step
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        logs["train/grad_norm"] = check_grad_norm(step, self.tokenizer.parameters(), self.trainer.precision,
                                                  ranks=ranks)
        if self.optim_cfg.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.optim_cfg.grad_clip, gradient_clip_algorithm="norm")
        opt.step()
        sched.step()
        if gan_on:
            d = hinge_d_loss(self.disc(x), self.disc(recon.detach()))
            check_losses(step, {"train/d_loss": d}, ranks)
            self.disc_opt.zero_grad(set_to_none=True)
            self.manual_backward(d)
            check_grad_norm(step, self.disc.parameters(), self.trainer.precision, "discriminator gradient norm", ranks)
            self.disc_opt.step()
            logs["train/d_loss"] = d.detach()
        codebook = self.tokenizer.trained_codebook()
        if codebook is not None:
            logs["train/restarted_codes"] = float(codebook.restart_dead_codes(aux["restart_candidates"]))
            for k in range(codebook.usage.shape[0]):
                logs[f"train/live_codes_s{k}"] = (codebook.usage[k] >= codebook.dead_code_threshold).float().mean()
        for key in ("vq_loss", "entropy_loss", "kl", "pyramid_loss"):
            if key in aux:
                logs[f"train/{key}"] = aux[key]
        logs["train/loss"] = loss.detach()
        logs["lr"] = sched.get_last_lr()[0]
        self.log_dict(logs, prog_bar=False)
        self.log("loss", loss.detach(), prog_bar=True, logger=False)
        return loss

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        codebook = self.tokenizer.trained_codebook()
        self._val_counts = None if codebook is None else torch.zeros_like(codebook.usage)  # (groups, vocab)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, _ = batch
        tokens = self.tokenizer.encode(x)
        recon = self.tokenizer.decode(tokens)
        if self._val_counts is not None:
            for k, idx in enumerate(self.tokenizer.usage_groups(tokens)):
                self._val_counts[k] += torch.bincount(idx.flatten(), minlength=self._val_counts.shape[1]).float()
        n = len(x)
        self.val_loss.update(reconstruction_loss(recon, x, self.recon_kind), weight=n)
        self.val_psnr.update(psnr(recon, x).mean(), weight=n)
        self.val_mse01.update(((recon - x) / 2).pow(2).mean(), weight=n)
        # val/loss: the reconstruction loss of encode -> decode (what best.ckpt minimises)
        self.log("val/loss", self.val_loss, prog_bar=False)
        self.log("val/psnr", self.val_psnr, prog_bar=True)
        self.log("val/mse01", self.val_mse01)

    def on_validation_epoch_end(self) -> None:
        if self._val_counts is None:
            return
        counts = self.trainer.strategy.reduce(self._val_counts, reduce_op="sum")
        used = (counts > 0).float().mean(1)  # (groups,)
        p = counts / counts.sum(1, keepdim=True).clamp_min(1)
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum(1))
        self.log("val/usage", used.mean(), sync_dist=False)
        self.log("val/usage_min", used.min(), prog_bar=True, sync_dist=False)
        self.log("val/perplexity", perplexity.mean(), sync_dist=False)
        if used.numel() > 1:
            for k, (u, ppl) in enumerate(zip(used, perplexity)):
                self.log(f"val/usage_s{k}", u, sync_dist=False)
                self.log(f"val/perplexity_s{k}", ppl, sync_dist=False)

    # ------------------------------------------------------------------ after training
    @torch.no_grad()
    def calibrate(self, batches: Iterable[tuple[Tensor, Tensor]], max_batches: int = 50) -> dict[str, float]:
        """Fit the tokenizer's data-dependent constants (``kl``: scale factor) on up to ``max_batches``."""
        self.tokenizer.eval()
        images = (x.to(self.device) for i, (x, _) in enumerate(batches) if i < max_batches)
        return self.tokenizer.calibrate(images)

    @torch.no_grad()
    def image_grids(self) -> dict[str, list[Tensor]]:
        """Originals of a fixed validation batch and their reconstructions (msvq: after each scale)."""
        return self.tokenizer.reconstruction_grids(self.grid_images.to(self.device))

"""Train the domain classifier (cross-entropy, random translations of up to 2 pixels)."""

from __future__ import annotations

import lightning as L
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from genarena.lit.guard import any_rank, check_grad_norm, check_losses, check_weights
from genarena.lit.optim import build_optimizer
from genarena.metrics.classifier import DomainClassifier, random_translate


class ClassifierModule(L.LightningModule):
    def __init__(self, channels: int, num_classes: int, ch: int, feature_dim: int, optim_cfg, total_steps: int) -> None:
        super().__init__()
        self.save_hyperparameters({"role": "classifier", "channels": channels, "num_classes": num_classes,
                                   "ch": ch, "feature_dim": feature_dim})
        self.model = DomainClassifier(channels, num_classes, ch, feature_dim)
        self.optim_cfg, self.total_steps = optim_cfg, total_steps
        self.val_loss, self.val_acc = MeanMetric(), MulticlassAccuracy(num_classes, average="micro")

    def configure_optimizers(self):
        opt, sched = build_optimizer(self.model, self.optim_cfg, self.total_steps, trainer=self._trainer)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.model(random_translate(x, 2))
        loss = F.cross_entropy(logits, y)
        check_losses(self.global_step, {"train/loss": loss}, any_rank(self._trainer))
        self.log_dict({"train/loss": loss, "train/acc": (logits.argmax(-1) == y).float().mean()})
        self.log("loss", loss, prog_bar=True, logger=False)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        self.log("train/grad_norm", check_grad_norm(self.global_step, self.model.parameters(), self.trainer.precision,
                                                    ranks=any_rank(self.trainer)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        check_weights(self.global_step, checkpoint["state_dict"])

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.val_loss.update(F.cross_entropy(logits, y), weight=len(y))
        self.val_acc.update(logits, y)
        self.log("val/loss", self.val_loss)
        self.log("val/acc", self.val_acc, prog_bar=True)

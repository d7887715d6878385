"""Callbacks: image grids (reconstructions, samples, coarse-to-fine progressions) every N steps."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torch import Tensor
from torchvision.utils import save_image

log = logging.getLogger(__name__)


def save_rows(rows: list[Tensor], path: Path) -> Path:
    """Save rows of images ``[(n, C, H, W)]`` in ``[-1, 1]`` as one PNG grid (one row per tensor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(r) for r in rows)
    grid = torch.cat([r.detach().float().cpu() for r in rows])
    save_image((grid + 1) / 2, str(path), nrow=n, padding=1, pad_value=0.5)
    return path


class ImageGridCallback(L.Callback):
    """Every ``every_n_steps`` training steps (and once at the end) call ``pl_module.image_grids()``,
    which returns ``{name: [rows]}``; each grid goes to ``<out_dir>/<name>_step<N>.png`` and to W&B."""

    def __init__(self, every_n_steps: int, out_dir: str | Path) -> None:
        self.every_n_steps, self.out_dir = every_n_steps, Path(out_dir)
        self._last_step = -1

    def _emit(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == self._last_step or not trainer.is_global_zero:
            return
        self._last_step = step
        was_training = pl_module.training
        pl_module.eval()
        try:
            grids = pl_module.image_grids()
        finally:
            pl_module.train(was_training)
        for name, rows in grids.items():
            path = save_rows(rows, self.out_dir / f"{name}_step{step:06d}.png")
            for lg in trainer.loggers:
                if isinstance(lg, WandbLogger):
                    try:
                        lg.log_image(key=f"images/{name}", images=[str(path)], step=step)
                    except Exception as e:  # logging must never end a run
                        log.warning("could not log %s to W&B: %s", path, e)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0 and trainer.global_step > 0:
            self._emit(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.every_n_steps > 0:
            self._emit(trainer, pl_module)

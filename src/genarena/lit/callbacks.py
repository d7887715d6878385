"""Callbacks: image grids (reconstructions, samples, coarse-to-fine progressions) every N steps, and a
progress bar over optimizer steps."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, TQDMProgressBar
from lightning.pytorch.loggers import WandbLogger

from genarena.image_files import save_rows

log = logging.getLogger(__name__)


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


class StepProgressBar(TQDMProgressBar):
    """One training bar over optimizer steps, ``step / trainer.max_steps``, kept across epochs (Lightning's
    default restarts at every epoch and shows ``Epoch 0/-2`` for a step-budgeted run)."""

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.set_description("train (steps)", refresh=False)
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        bar = self.train_progress_bar
        if bar.total is None:
            bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
            bar.n = trainer.global_step  # a resumed run starts where it stopped
            bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        step = trainer.global_step
        if bar is not None and self._should_update(step, bar.total or 0):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


class EMA(EMAWeightAveraging):
    """Lightning's EMA weight averaging, keeping the trained weights in the final checkpoint too.

    During training Lightning's callback checkpoints the averaged weights as ``state_dict`` and the trained ones
    as ``current_model_state``; at the end of training it copies the average into the module, so a checkpoint
    saved afterwards (``last.ckpt``) would hold the average twice. This keeps the trained weights from that moment
    and stores them as ``current_model_state`` of later checkpoints (``genarena-sample ema=false`` samples them).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._trained_state: dict | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trained_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._trained_state is not None:
            checkpoint["current_model_state"] = self._trained_state

"""Periodic evaluation during generator training (FID over training in W&B).

Every ``every_n_steps`` optimizer steps, rank zero samples ``num_samples`` images (labels balanced over
the classes, fixed ``seed``) with the module's sampling weights and config, scores them with the
evaluator the training layer attached (:meth:`PeriodicEvalCallback.attach`), and logs ``eval/fid`` and
``eval/class_acc`` to the trainer's loggers and to ``log_path`` (JSON lines, inside the run directory).
``every_n_steps = 0`` switches it off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from genarena.generators.generate import balanced_labels, generate

log = logging.getLogger(__name__)


class PeriodicEvalCallback(Callback):
    """FID (and class accuracy) of fresh samples every ``every_n_steps`` steps, on rank zero only.

    ``evaluator(images, labels, metrics=[...]) -> dict`` is attached by the training layer on rank zero
    (it resolves the feature extractor, which may train the domain classifier); without one, nothing runs.
    """

    def __init__(self, every_n_steps: int, num_samples: int, seed: int, batch_size: int, log_path: str | Path) -> None:
        self.every_n_steps, self.num_samples, self.seed, self.batch_size = every_n_steps, num_samples, seed, batch_size
        self.log_path = Path(log_path)
        self.evaluator: Callable[..., dict[str, Any]] | None = None
        self._last_step = -1

    @property
    def active(self) -> bool:
        return self.every_n_steps > 0

    def attach(self, evaluator: Callable[..., dict[str, Any]]) -> None:
        self.evaluator = evaluator

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if not self.active or step == 0 or step % self.every_n_steps or step == self._last_step:
            return
        self._last_step = step
        if not trainer.is_global_zero or self.evaluator is None:
            return
        scalars = self.evaluate(pl_module)
        logged = {f"eval/{k}": float(scalars[k]) for k in ("fid", "class_acc") if k in scalars}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=step)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        log.info("step %d: %s (%d samples, %s features)", step,
                 ", ".join(f"{k}={v:.4g}" for k, v in logged.items()), scalars["eval_n"], scalars["eval_extractor"])

    @torch.no_grad()
    def evaluate(self, pl_module: L.LightningModule) -> dict[str, Any]:
        """Sample with ``pl_module.generator`` / ``tokenizer`` / ``sampling`` and score; train mode is restored."""
        was_training = pl_module.training
        device = pl_module.device
        labels = balanced_labels(self.num_samples, pl_module.num_classes)
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                result = generate(pl_module.generator, pl_module.tokenizer, labels, pl_module.sampling, self.seed,
                                  self.batch_size, device, progress=False)
            return self.evaluator(result.images, result.labels, metrics=["fid"])
        finally:
            pl_module.train(was_training)

"""Periodic evaluation during generator training (FID over training in W&B).

Every ``eval.every_n_steps`` optimizer steps, rank zero samples ``eval.periodic_num_samples`` images
(labels balanced over the classes, fixed ``eval.seed``) with the module's sampling weights and
config, and logs ``eval/fid`` and ``eval/class_acc`` (against ``eval.split`` of the data, with
``eval.extractor``) to the trainer's loggers and to ``<run dir>/eval/periodic.jsonl``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from genarena.generators.generate import balanced_labels, generate
from genarena.metrics.fidelity import Evaluator

log = logging.getLogger(__name__)


class PeriodicEvalCallback(Callback):
    """FID (and class accuracy) of fresh samples every ``every_n_steps`` steps, on rank zero only."""

    def __init__(self, evaluator: Evaluator | None, every_n_steps: int, num_samples: int, seed: int,
                 batch_size: int, log_path: Path) -> None:
        self.evaluator = evaluator  # None on ranks other than zero
        self.every_n_steps, self.num_samples, self.seed, self.batch_size = every_n_steps, num_samples, seed, batch_size
        self.log_path = log_path
        self._last_step = -1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps or step == self._last_step:
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
        """Sample with ``pl_module.sampler`` / ``tokenizer`` / ``sampling`` and score; train mode is restored."""
        was_training = pl_module.training
        device = pl_module.device
        labels = balanced_labels(self.num_samples, pl_module.num_classes)
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                result = generate(pl_module.sampler, pl_module.tokenizer, labels, pl_module.sampling, self.seed,
                                  self.batch_size, device, progress=False)
            return self.evaluator(result.images, result.labels, metrics=["fid"])
        finally:
            pl_module.train(was_training)


def periodic_eval_callback(cfg: DictConfig, run_dir: Path) -> PeriodicEvalCallback | None:
    """The periodic FID callback when ``eval.every_n_steps > 0``, else None. On rank zero the extractor is
    resolved now (training the domain classifier if it is missing), before the trainer starts."""
    ev = cfg.eval
    if ev.every_n_steps <= 0:
        return None
    evaluator = Evaluator(cfg) if rank_zero_only.rank == 0 else None
    return PeriodicEvalCallback(evaluator, ev.every_n_steps, ev.periodic_num_samples, ev.seed, ev.batch_size,
                                run_dir / "eval" / "periodic.jsonl")

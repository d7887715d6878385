"""Checkpoints a run can resume from exactly, and the state Lightning does not keep on its own.

Lightning's checkpoint restores the weights, optimizer, LR scheduler, step and loop counters, callback states
(best checkpoint, early stopping, EMA weights) and the datamodule's state (genarena's data order and position,
:mod:`genarena.data.order`). Two more things make a resumed run continue as if it had never stopped:

- :class:`TrainingState` (added to every trainer) keeps the RNG state (torch, CUDA, numpy, python) and the
  training time of earlier sessions: the RNG is restored right before the first batch a resumed run trains, and
  ``train_time_s`` adds up every session;
- :class:`PeriodicCheckpoint` (``callbacks.checkpoint``) writes the newest checkpoint every N steps, after that
  step's validation when one runs (so the checkpoint holds the validation's best-loss bookkeeping), and at the
  batch boundary where Lightning stops after a SIGTERM (preemption): ``checkpoints/step<N>.ckpt``.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """The global RNG states as plain containers of tensors and numbers (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda), "python": random.getstate(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))


class TrainingState(Callback):
    """RNG state and training time across sessions of one run.

    Saved in every checkpoint: the RNG state of rank zero (every rank is seeded alike and draws alike, so it
    is every rank's) and the training time so far (earlier sessions plus this one). A resumed run restores the
    RNG at the start of its first training batch, after everything that set-up and data loading drew.
    """

    fitting: ClassVar[L.Trainer | None] = None  # the trainer fitting in this process now (signal handlers ask)

    def __init__(self) -> None:
        self._pending_rng: dict[str, Any] | None = None
        self._earlier_s = 0.0
        self._started: float | None = None
        self._stopped: float | None = None

    def train_time_s(self) -> float:
        """Seconds of fitting in every session of this run so far."""
        if self._started is None:
            return self._earlier_s
        return self._earlier_s + ((self._stopped or time.monotonic()) - self._started)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started, self._stopped = time.monotonic(), None
        TrainingState.fitting = trainer

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stopped = time.monotonic()
        TrainingState.fitting = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        TrainingState.fitting = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(), "train_time_s": self.train_time_s()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict.get("rng")
        self._earlier_s = float(state_dict.get("train_time_s", 0.0))


def training_time_s(trainer: L.Trainer) -> float:
    """The run's total training time (every session) from the trainer's :class:`TrainingState`."""
    states = [c for c in trainer.callbacks if isinstance(c, TrainingState)]
    return states[0].train_time_s() if states else 0.0


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the fit loop validates right after the current training batch (Lightning's own decision)."""
    loop = trainer.fit_loop
    try:
        return bool(loop.epoch_loop._should_check_val_fx(loop._data_fetcher))
    except AttributeError:  # a Lightning without these internals: save at the batch end, as ModelCheckpoint does
        return False


class PeriodicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every ``every_n_train_steps`` steps that a run can resume from exactly.

    At a step where validation also runs the save waits for the validation's end, so the checkpoint holds
    what that validation changed (the module's best validation loss, the best checkpoint's and early
    stopping's state); a resumed run does not repeat that validation. After a SIGTERM Lightning stops at
    the next batch boundary; this then saves the state there (not during a validation, whose partial
    means a checkpoint cannot hold: the newest periodic checkpoint stays the resume point).
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        every = self._every_n_train_steps
        if (every > 0 and trainer.global_step % every == 0 and not self._should_skip_saving_checkpoint(trainer)
                and validation_follows(trainer)):
            self._defer_save_until_validation = True  # ModelCheckpoint.on_validation_end saves then
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and not trainer.validating and not trainer.sanity_checking:
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
            log.info("SIGTERM: stopped at step %d; resume point %s", trainer.global_step, self._last_checkpoint_saved)
        super().on_exception(trainer, pl_module, exception)

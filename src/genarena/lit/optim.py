"""AdamW with decoupled weight decay on matrices only, and warm-up + cosine / linear / constant LR.

The decay runs over whichever budget ends first: ``trainer.max_steps`` or, when set,
``trainer.max_time`` (then the schedule's progress is the fraction of the time spent), so a
time-capped run still anneals its learning rate instead of stopping at a high one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from lightning.pytorch.callbacks import Timer


def param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay for >= 2-D weights, none for norms, biases, embeddings and learned scales.

    Embeddings (``nn.Embedding`` weights and parameters whose name ends in ``pos_embed`` / ``_embed``)
    are excluded as in VAR and MAR.
    """
    no_decay_ids = set()
    for m in module.modules():
        if isinstance(m, (nn.Embedding, nn.LayerNorm, nn.GroupNorm)):
            no_decay_ids.update(id(p) for p in m.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or id(p) in no_decay_ids or "embed" in name.rsplit(".", 1)[-1]:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(step: int, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float,
              time_fraction: float = 0.0) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then the chosen decay to ``min_ratio``.
    The decay's progress is the larger of the step fraction and ``time_fraction`` (of ``max_time``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max((step - warmup_steps) / max(1, total_steps - warmup_steps), time_fraction))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise ValueError(f"optim.schedule={schedule!r}; choose cosine, linear or constant")


def time_budget_fraction(trainer) -> Callable[[], float]:
    """A function giving the fraction of the trainer's ``max_time`` spent in training (0 without one)."""
    timers = [c for c in (trainer.callbacks if trainer is not None else []) if isinstance(c, Timer)]
    if not timers:
        return lambda: 0.0
    timer = timers[0]

    def fraction() -> float:
        elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
        return 0.0 if remaining is None else elapsed / max(1e-9, elapsed + remaining)

    return fraction


def build_optimizer(module: nn.Module, optim_cfg, total_steps: int, params=None, trainer=None):
    """AdamW over ``module`` (or explicit ``params``) plus a per-step LambdaLR, in Lightning's format.
    With a ``trainer`` that has ``max_time``, the decay also follows the time spent."""
    groups = params if params is not None else param_groups(module, optim_cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas))
    spent = time_budget_fraction(trainer)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, optim_cfg.warmup_steps, total_steps, optim_cfg.schedule, optim_cfg.min_lr_ratio,
                                 spent()))
    return opt, sched

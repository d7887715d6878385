"""AdamW with decoupled weight decay on matrices only, and warm-up + cosine / linear / constant LR."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


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


def lr_lambda(step: int, warmup_steps: int, total_steps: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the base LR at ``step``: linear warm-up, then the chosen decay to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    raise ValueError(f"optim.schedule={schedule!r}; choose cosine, linear or constant")


def build_optimizer(module: nn.Module, optim_cfg, total_steps: int, params=None):
    """AdamW over ``module`` (or explicit ``params``) plus a per-step LambdaLR, in Lightning's format."""
    groups = params if params is not None else param_groups(module, optim_cfg.weight_decay)
    opt = torch.optim.AdamW(groups, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_lambda(s, optim_cfg.warmup_steps, total_steps, optim_cfg.schedule, optim_cfg.min_lr_ratio))
    return opt, sched

"""The non-finite guard: a run stops at the first step whose loss or gradient norm is NaN or infinite.

Every LightningModule checks its losses before backward, its gradient norm before the optimizer step (so
no update from a non-finite gradient reaches the weights) and its weights before a checkpoint is written
(so no checkpoint ever holds non-finite weights). A failure is one :class:`~genarena.errors.NonFiniteError`
naming the step and which loss (or the gradient norm); the training layer records it as the run's
``failed`` status.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from genarena.errors import NonFiniteError

# precisions whose GradScaler skips steps with inf / NaN gradients on purpose (and lowers its scale)
SCALED_PRECISIONS = ("16-mixed", "16")
ADVICE = "lower optim.lr or set optim.grad_clip (and check the data)"


def _as_float(value: Tensor | float) -> float:
    return float(value.detach().float().cpu()) if isinstance(value, Tensor) else float(value)


AnyRank = Callable[[bool], bool]  # True on every rank when it is True on any (None: a single process)


def any_rank(trainer: Any) -> AnyRank | None:
    """The trainer's "true on any rank" reduction in a multi-process run (every rank then stops at the same step
    instead of one rank stopping and the others waiting for it in a collective), else None."""
    if trainer is None or trainer.world_size <= 1:
        return None
    return lambda flag: bool(trainer.strategy.reduce_boolean_decision(flag, all=False))


def check_losses(step: int, losses: Mapping[str, Tensor | float], ranks: AnyRank | None = None) -> None:
    """Raise :class:`NonFiniteError` at ``step`` when any of ``losses`` (``{name: scalar}``) is NaN or infinite
    (on any rank, with ``ranks``); one device sync for all of them."""
    tensors = [v for v in losses.values() if isinstance(v, Tensor)]
    device = tensors[0].device if tensors else torch.device("cpu")
    stacked = torch.stack([(v.detach() if isinstance(v, Tensor) else torch.tensor(v)).to(device, torch.float32)
                           .reshape(()) for v in losses.values()]) if losses else torch.zeros(0)
    bad_here = not bool(torch.isfinite(stacked).all())
    if not (ranks(bad_here) if ranks is not None else bad_here):
        return
    bad = {k: _as_float(v) for k, v in losses.items() if not math.isfinite(_as_float(v))}
    named = ", ".join(f"{k} = {v}" for k, v in bad.items()) or "on another rank"
    raise NonFiniteError(f"training diverged at step {step}: non-finite loss ({named}); {ADVICE}")


def grad_norm(parameters: Iterable[torch.nn.Parameter]) -> Tensor:
    """The 2-norm of all gradients of ``parameters`` together (0 when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


def check_grad_norm(step: int, parameters: Iterable[torch.nn.Parameter], precision: str | int | None = None,
                    name: str = "gradient norm", ranks: AnyRank | None = None) -> Tensor:
    """The gradient norm of ``parameters``; :class:`NonFiniteError` at ``step`` when it is NaN or infinite (on any
    rank, with ``ranks``: sharded gradients differ between ranks). Under fp16 mixed precision the GradScaler
    handles inf gradients itself (it skips the step), so only the norm is returned there."""
    norm = grad_norm(parameters)
    if str(precision) in SCALED_PRECISIONS:
        return norm
    bad_here = not bool(torch.isfinite(norm))
    if ranks(bad_here) if ranks is not None else bad_here:
        raise NonFiniteError(f"training diverged at step {step}: non-finite {name} "
                             f"({float(norm) if bad_here else 'on another rank'}) after a finite loss; {ADVICE}")
    return norm


def check_weights(step: int, state_dict: Mapping[str, Tensor]) -> None:
    """:class:`NonFiniteError` when a floating-point tensor of ``state_dict`` holds NaN or inf: a checkpoint of
    such weights is never written."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(f"training diverged by step {step}: non-finite weights ({shown}); no checkpoint is "
                             f"written from them; {ADVICE}")

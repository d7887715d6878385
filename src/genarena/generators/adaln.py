"""AdaLN's elementwise ops, fused: ``modulate`` (``x (1 + scale) + shift``, DiT / VAR's adaptive LayerNorm) and
``gated_add`` (``x + gate h``, the gated residual branch), each one forward op with a backward that computes only the
products it needs. Used by the shared backbone's blocks, the heads' final AdaLN and the diffusion MLP's blocks."""

from __future__ import annotations

import torch
from torch import Tensor


class _Modulate(torch.autograd.Function):
    """``x (1 + scale) + shift`` in one forward op; the backward computes only the products it needs (autograd's
    ``addcmul`` would also multiply the full-size ``x`` by its unit ``value``, and the unfused form spends a forward
    op more)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
        gain = 1 + scale
        ctx.save_for_backward(x, gain)
        ctx.shapes = (scale.shape, scale.dtype, shift.shape, shift.dtype)
        return torch.addcmul(shift, x, gain)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, gain = ctx.saved_tensors
        scale_shape, scale_dtype, shift_shape, shift_dtype = ctx.shapes
        gx = (grad * gain).to(x.dtype) if ctx.needs_input_grad[0] else None
        gs = (grad * x).sum_to_size(scale_shape).to(scale_dtype) if ctx.needs_input_grad[1] else None
        gb = grad.sum_to_size(shift_shape).to(shift_dtype) if ctx.needs_input_grad[2] else None
        return gx, gs, gb


class _GatedAdd(torch.autograd.Function):
    """``x + gate h`` (a gated residual branch) in one forward op, with the backward's two products only."""

    @staticmethod
    def forward(ctx, x: Tensor, gate: Tensor, h: Tensor) -> Tensor:
        ctx.save_for_backward(gate, h)
        ctx.x_dtype = x.dtype
        return torch.addcmul(x, gate, h)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        gate, h = ctx.saved_tensors
        gx = grad.to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        gg = (grad * h).sum_to_size(gate.shape).to(gate.dtype) if ctx.needs_input_grad[1] else None
        gh = (grad * gate).to(h.dtype) if ctx.needs_input_grad[2] else None
        return gx, gg, gh


def modulate(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """AdaLN's ``x (1 + scale) + shift``; ``x (B, L, C)`` (or ``(N, C)``), ``scale`` and ``shift`` broadcast to it."""
    return _Modulate.apply(x, scale, shift)


def gated_add(x: Tensor, gate: Tensor, h: Tensor) -> Tensor:
    """``x + gate h``; ``gate`` broadcasts to ``h``'s shape, which is ``x``'s."""
    return _GatedAdd.apply(x, gate, h)

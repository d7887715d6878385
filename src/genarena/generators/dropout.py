"""Dropout (Srivastava et al. 2014) with a cheaper keep mask on the CPU, and attention whose probability dropout uses
it.

Inverted dropout keeps each element with probability ``q = 1 - p`` and scales kept ones by ``1 / q``, so
``E[dropout(x)] = x``. ``torch.bernoulli_`` draws one 32-bit word from the CPU generator per element, which made
the masks about 12% of a MAR training step with the official dropout of 0.1 (``benchmarks/vs_official.md``). Here
the mask compares 16-bit uniforms, four to each 64-bit draw, with a threshold: about 8x cheaper on the CPU. The
keep probability is ``q`` rounded to a multiple of ``2^-16`` (0.9 -> 0.899994) and the scale is its exact
inverse, so the expectation stays ``x``. Other devices run ``torch.nn.functional.dropout`` (its fused kernel), and
:func:`attention` runs ``F.scaled_dot_product_attention`` everywhere but in CPU training with dropout.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

LEVELS = 1 << 16  # the 16-bit uniforms' resolution


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None
              ) -> tuple[Tensor, float]:
    """A CPU keep mask (bool, ``shape``) with ``P(keep) = round((1 - p) 2^16) / 2^16``, and that probability."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p={p}; it must be in [0, 1)")
    kept_levels = round((1.0 - p) * LEVELS)
    numel = math.prod(shape)
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((numel + 3) // 4,), dtype=torch.int64, generator=generator)
    uniform16 = words.view(torch.int16)[:numel].view(shape)  # (shape) uniform on [-2^15, 2^15)
    return uniform16 < kept_levels - LEVELS // 2, kept_levels / LEVELS


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout of ``x`` at rate ``p`` (the identity when not ``training`` or ``p = 0``)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    mask, keep = keep_mask(x.shape, p)
    return (x * mask).mul_(1.0 / keep)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s CPU mask (same ``p``, same place in a state dict: none)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def attention_with_dropout(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float | None,
                           p: float) -> Tensor:
    """``dropout(softmax(q k^T s + mask)) v`` for ``q (B, H, L, D)``, ``k, v (B, H, S, D)`` -> ``(B, H, L, D)``:
    ``F.scaled_dot_product_attention`` in training with ``dropout_p = p`` (its mask conventions: bool True
    attends, a float mask is added; ``s`` defaults to ``1 / sqrt(D)``), with :func:`dropout`'s mask."""
    scores = (q @ k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.shape[-1]) if scale is None else scale)  # (B, H, L, S)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
    return dropout(scores.softmax(-1), p, True) @ v  # (B, H, L, D)


def attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float | None, p: float) -> Tensor:
    """``F.scaled_dot_product_attention`` with ``dropout_p = p`` (0 outside training), except on the CPU with ``p > 0``:
    there :func:`attention_with_dropout` (the cheaper mask). Shapes as in :func:`attention_with_dropout`."""
    if p > 0 and q.device.type == "cpu":
        return attention_with_dropout(q, k, v, attn_mask, scale, p)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale, dropout_p=p)

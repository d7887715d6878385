"""MAR's plain ViT stack (Li et al. 2024; MAE-style encoder and decoder): pre-norm blocks without class
conditioning. The class reaches the network only through MAR's buffer of class tokens.

Block (timm's ViT block as MAR builds it: q/k/v with biases, LayerNorm eps 1e-6, exact GELU)::

    x = x + DropPath(Drop(Attn(LN(x))))            attention probabilities dropped at the same rate
    x = x + DropPath(Drop(W2 Drop(GELU(W1 LN(x)))))

The stack has the interface of the shared :class:`~genarena.generators.backbone.Transformer`
(``forward(x, cond, mask)``, KV cache, ``flops``), so MAR runs on either; ``cond`` is accepted for that
interface and not used. Shapes: tokens ``(B, L, C)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from genarena.generators.backbone import Attention, DropPath, KVCache
from genarena.generators.dropout import Dropout


class ViTMLP(nn.Module):
    """``(B, L, C) -> (B, L, C)``: Linear, GELU, dropout, Linear, dropout."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.drop1 = Dropout(dropout)
        self.fc2 = nn.Linear(hidden, width)
        self.drop2 = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class ViTBlock(nn.Module):
    """Pre-norm ViT block (module docstring)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool, dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads, qk_norm, dropout)
        self.attn_drop = Dropout(dropout)  # on the attention output (timm's proj_drop)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = ViTMLP(width, int(width * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> Tensor:
        x = self.drop_path.add(x, self.attn_drop(self.attn(self.norm1(x), mask, None, cache)))
        return self.drop_path.add(x, self.mlp(self.norm2(x)))


class ViT(nn.Module):
    """A stack of ViT blocks. ``forward(x (B, L, C), cond, mask) -> (B, L, C)``; ``cond`` is unused.

    With :meth:`start_cache` active, every call appends its tokens' keys/values to per-layer caches and
    attends to everything cached so far (incremental decoding); :meth:`stop_cache` drops them.
    """

    def __init__(self, depth: int, width: int, heads: int, mlp_ratio: float, qk_norm: bool, dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.depth, self.width, self.heads, self.mlp_ratio = depth, width, heads, mlp_ratio
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(ViTBlock(width, heads, mlp_ratio, qk_norm, dropout, rate) for rate in rates)
        self.caches: list[KVCache] | None = None

    def start_cache(self, capacity: int | None = None) -> None:
        """Start incremental decoding; ``capacity``: the positions to preallocate (the sequence length)."""
        self.caches = [KVCache(capacity) for _ in self.blocks]

    def stop_cache(self) -> None:
        self.caches = None

    def modulations(self, cond: Tensor | None) -> None:
        """No class conditioning in the blocks: nothing to precompute (the shared backbone's interface)."""
        return None

    def forward(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None, mods: None = None) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, mask, self.caches[i] if self.caches is not None else None)
        return x

    def flops(self, tokens: int, keys: int | None = None, adaln: bool = True) -> float:
        """Forward FLOPs (2 per multiply-add) of ``tokens`` queries attending to ``keys`` keys (default:
        ``tokens``), for one sequence."""
        del adaln  # no AdaLN here: the argument keeps the shared backbone's signature
        keys = tokens if keys is None else keys
        c, hidden = self.width, int(self.width * self.mlp_ratio)
        per_token = 2 * (3 * c * c + c * c + 2 * c * hidden)  # qkv, out proj, MLP
        return self.depth * (tokens * per_token + 4 * tokens * keys * c)

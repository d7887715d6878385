"""LlamaGen's GPT (Sun et al. 2024) as a backbone for ``ar`` (``generator.backbone=llama``).

Block (pre-norm, no biases anywhere; the class enters only as the prefix token, no AdaLN)::

    x = x + Dropout(W_o Attn(RoPE(W_q n), RoPE(W_k n), W_v n)),    n = RMSNorm(x)
    x = x + Dropout(W_down (SiLU(W_gate n) * W_up n)),              n = RMSNorm(x)

``RMSNorm(x) = g x / sqrt(mean(x^2) + 1e-5)``. The SwiGLU hidden size is ``2/3 mlp_ratio C`` rounded
up to a multiple of ``ffn_multiple_of`` (LlamaGen: ratio 4, multiple 256), so its three matrices hold
as many weights as a ratio-4 GELU MLP. Attention is causal with softmax scale ``1 / sqrt(C/H)`` and
2-D RoPE on q and k (the class token is not rotated). Head: RMSNorm, then a bias-free linear.
Init (LlamaGen's ``initialize_weights``): every linear and embedding ``N(0, 0.02^2)``, biases none,
the output projection zero, so the initial loss is exactly ``ln V``.

LlamaGen's RoPE tables are zero (not the identity) at the class token, so that token's q and k are
zero: every position attends to it with logit 0, and it attends only to itself (:func:`llamagen_rope`).
RoPE layout: this module rotates the pair ``(i, i + D/2)`` of each head (``backbone.apply_rope``),
LlamaGen the adjacent pair ``(2i, 2i + 1)``, with the same angle for pair i. The two are one model up
to a permutation of the q and k rows of each head, which ``genarena.official.llamagen_gpt`` applies.
Shapes: tokens ``(B, L, C)``, heads ``(B, H, L, C/H)``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.generators.backbone import DropPath, KVCache, apply_rope, rope_2d
from genarena.generators.dropout import Dropout

NORM_EPS = 1e-5  # LlamaGen's RMSNorm epsilon
INIT_STD = 0.02  # LlamaGen's initializer_range


def llamagen_rope(grid: tuple[int, int], head_dim: int, prefix: int = 1) -> tuple[Tensor, Tensor]:
    """2-D RoPE tables ``(prefix + h*w, head_dim)`` as LlamaGen builds them: the grid rows as in
    :func:`~genarena.generators.backbone.rope_2d`, the ``prefix`` (class token) rows zero."""
    cos, sin = rope_2d(grid, head_dim, prefix)
    cos[:prefix] = 0
    return cos, sin


def swiglu_hidden(width: int, mlp_ratio: float, multiple_of: int) -> int:
    """LlamaGen's FFN size: ``int(2/3 mlp_ratio C)`` rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * mlp_ratio * width / 3)
    return -(-hidden // multiple_of) * multiple_of


class LlamaAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None, rope: tuple[Tensor, Tensor] | None,
                cache: KVCache | None) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, n, D)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, T, D)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, n, D)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class SwiGLU(nn.Module):
    """``W_down (SiLU(W_gate x) * W_up x)``, then dropout."""

    def __init__(self, width: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate = nn.Linear(width, hidden, bias=False)
        self.up = nn.Linear(width, hidden, bias=False)
        self.down = nn.Linear(hidden, width, bias=False)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.down(F.silu(self.gate(x)) * self.up(x)))


class LlamaBlock(nn.Module):
    """Pre-RMSNorm attention and SwiGLU residual branches (see the module docstring)."""

    def __init__(self, width: int, heads: int, hidden: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=NORM_EPS)
        self.attn = LlamaAttention(width, heads, dropout)
        self.norm2 = nn.RMSNorm(width, eps=NORM_EPS)
        self.ffn = SwiGLU(width, hidden, dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor | None = None, rope=None, cache: KVCache | None = None) -> Tensor:
        x = self.drop_path.add(x, self.attn(self.norm1(x), mask, rope, cache))
        return self.drop_path.add(x, self.ffn(self.norm2(x)))


class LlamaHead(nn.Module):
    """RMSNorm and a bias-free projection ``(B, L, C) -> (B, L, out)``."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(width, eps=NORM_EPS)
        self.proj = nn.Linear(width, out_dim, bias=False)

    def modulation(self, cond: Tensor | None) -> None:
        """No AdaLN: nothing to precompute (the shared head's interface)."""
        return None

    def forward(self, x: Tensor, cond: Tensor | None = None, mod: None = None) -> Tensor:
        """``cond`` and ``mod`` are accepted for the shared head's signature and unused (no AdaLN)."""
        return self.proj(self.norm(x))


class LlamaTransformer(nn.Module):
    """A stack of :class:`LlamaBlock`. ``forward(x (B, L, C), cond, mask, rope) -> (B, L, C)``; ``cond`` is
    unused (the class is the prefix token). KV caching as in ``backbone.Transformer``."""

    def __init__(self, depth: int, width: int, heads: int, mlp_ratio: float, ffn_multiple_of: int,
                 dropout: float, drop_path: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.depth, self.width, self.heads = depth, width, heads
        self.hidden = swiglu_hidden(width, mlp_ratio, ffn_multiple_of)
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(LlamaBlock(width, heads, self.hidden, dropout, rate) for rate in rates)
        self.caches: list[KVCache] | None = None

    def start_cache(self, capacity: int | None = None) -> None:
        """Start incremental decoding; ``capacity``: the positions to preallocate (the sequence length)."""
        self.caches = [KVCache(capacity) for _ in self.blocks]

    def stop_cache(self) -> None:
        self.caches = None

    def modulations(self, cond: Tensor | None) -> None:
        """No AdaLN: nothing to precompute (the shared backbone's interface)."""
        return None

    def forward(self, x: Tensor, cond: Tensor | None = None, mask: Tensor | None = None, rope=None,
                mods: None = None) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, mask, rope, self.caches[i] if self.caches is not None else None)
        return x

    def flops(self, tokens: int, keys: int | None = None, adaln: bool = True) -> float:
        """Forward FLOPs (2 per multiply-add) of ``tokens`` queries attending to ``keys`` keys (default
        ``tokens``), for one sequence: qkv, output projection, SwiGLU and attention."""
        del adaln  # no AdaLN here: the argument keeps the shared backbone's signature
        keys = tokens if keys is None else keys
        c = self.width
        per_token = 2 * (3 * c * c + c * c + 3 * c * self.hidden)
        return self.depth * (tokens * per_token + 4 * tokens * keys * c)


@torch.no_grad()
def llama_init(module: nn.Module, head: LlamaHead) -> None:
    """LlamaGen's init: linears and embeddings ``N(0, 0.02^2)`` (biases zero), the head's projection zero."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=INIT_STD)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    nn.init.zeros_(head.proj.weight)

"""The transformer every paradigm shares: pre-norm blocks with AdaLN class conditioning.

Block (VAR / DiT style; ``c`` is the class embedding ``(B, C)``)::

    g1, g2, s1, s2, b1, b2 = Linear(SiLU(c))
    x = x + g1 * Attn(LN(x) (1 + s1) + b1)
    x = x + g2 * MLP(LN(x) (1 + s2) + b2)

The gates start at ``gate_init`` (near zero) and the modulations at zero, so every block starts close
to the identity. Attention runs through ``F.scaled_dot_product_attention`` (CPU training with dropout: the same
attention with the cheaper mask of :mod:`genarena.generators.dropout`) with an optional boolean mask
(True = may attend), optional q/k l2-normalisation with a learned per-head scale (VAR: init 4, capped at 100,
softmax scale 1), optional 2-D rotary positions and a KV cache for incremental
decoding (preallocated, see :class:`KVCache`). ``k_bias=False`` gives the keys no bias (VAR's attention: only q
and v have one). Sampling computes the blocks' modulations once per call (:meth:`Transformer.modulations`).
Shapes: tokens ``(B, L, C)``, heads ``(B, H, L, C/H)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.generators.dropout import Dropout, attention
from genarena.generators.heads import CEHead


def resolve_width(depth: int, width: int | None, heads: int | None) -> tuple[int, int]:
    """VAR's rule: width = 64 * depth and heads = depth unless set explicitly."""
    width = width or 64 * depth
    heads = heads or depth
    if width % heads:
        raise ValueError(f"width {width} is not divisible by heads {heads}")
    return width, heads


def block_causal_mask(block_sizes: list[int]) -> Tensor:
    """Boolean ``(L, L)`` mask for next-scale prediction: query q may see key k iff
    ``level(q) >= level(k)`` (its own scale and every coarser one). ``L = sum(block_sizes)``."""
    levels = torch.cat([torch.full((n,), i) for i, n in enumerate(block_sizes)])
    return levels[:, None] >= levels[None, :]


def causal_mask(length: int) -> Tensor:
    """Boolean lower-triangular ``(L, L)`` mask (query i sees keys 0..i)."""
    return torch.ones(length, length, dtype=torch.bool).tril()


def drop_labels(labels: Tensor, p: float, null_class: int, generator: torch.Generator | None = None) -> Tensor:
    """Replace each label by ``null_class`` with probability ``p`` (classifier-free guidance training)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device, generator=generator) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


# ----------------------------------------------------------------------------------- rotary 2-D
def rope_2d(grid: tuple[int, int], head_dim: int, prefix: int = 0, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables ``(prefix + h*w, head_dim)`` for 2-D RoPE (LlamaGen): the first half of each
    head rotates with the row index, the second with the column; ``prefix`` tokens (class tokens)
    get no rotation."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head dim divisible by 4, got {head_dim}")
    h, w = grid
    quarter = head_dim // 4
    freqs = 1.0 / base ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w).reshape(-1)
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w).reshape(-1)
    ang = torch.cat([rows[:, None] * freqs, cols[:, None] * freqs], dim=1)  # (hw, head_dim / 2)
    ang = torch.cat([torch.zeros(prefix, head_dim // 2, dtype=torch.float64), ang])
    ang = torch.cat([ang, ang], dim=1)  # rotate_half layout
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x (B, H, L, D)`` by tables ``(L, D)``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


# ----------------------------------------------------------------------------------- attention
NORM_EPS = 1e-12  # F.normalize's floor on the norm of q and k


class KVCache:
    """Keys and values ``(B, H, T, D)`` of the tokens decoded so far, for one attention layer, in buffers
    preallocated for ``capacity`` positions at the first :meth:`append` (no copy of the cache per step); a longer
    sequence (or ``capacity`` None) doubles the buffers when full."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self.k: Tensor | None = None  # (B, H, capacity, D)
        self.v: Tensor | None = None
        self.length = 0

    def _grow(self, k: Tensor, v: Tensor, size: int) -> None:
        b, h, _, d = k.shape
        new_k, new_v = k.new_empty(b, h, size, d), v.new_empty(b, h, size, v.shape[-1])
        if self.k is not None:
            new_k[:, :, : self.length] = self.k[:, :, : self.length]
            new_v[:, :, : self.length] = self.v[:, :, : self.length]
        self.k, self.v = new_k, new_v

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k, v (B, H, n, D)`` after the cached positions; return all of them ``(B, H, T + n, D)``."""
        end = self.length + k.shape[2]
        if self.k is None or end > self.k.shape[2]:
            self._grow(k, v, max(end, self.capacity or 0, 2 * self.length))
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def __len__(self) -> int:
        return self.length


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qk_norm: bool, dropout: float, k_bias: bool = True) -> None:
        super().__init__()
        self.heads, self.head_dim, self.qk_norm, self.dropout = heads, width // heads, qk_norm, dropout
        self.k_bias = k_bias
        self.qkv = nn.Linear(width, 3 * width, bias=k_bias)
        if not k_bias:  # VAR: learned q and v biases, the k bias fixed at zero
            self.q_bias = nn.Parameter(torch.zeros(width))
            self.v_bias = nn.Parameter(torch.zeros(width))
            self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
        self.proj = nn.Linear(width, width)
        if qk_norm:  # VAR: q, k on the unit sphere, q scaled by exp(s), s learned per head, init log 4
            self.log_scale = nn.Parameter(torch.full((1, heads, 1, 1), math.log(4.0)))
            self.max_log_scale = math.log(100.0)

    def forward(self, x: Tensor, mask: Tensor | None = None, rope: tuple[Tensor, Tensor] | None = None,
                cache: KVCache | None = None) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x) if self.k_bias else F.linear(
            x, self.qkv.weight, torch.cat([self.q_bias, self.zero_k_bias, self.v_bias]))  # (B, L, 3C)
        q, k, v = qkv.view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scale = None
        if self.qk_norm:  # q / |q| exp(s) in one full-size multiply (the scale folded into the small factor)
            gain = self.log_scale.clamp(max=self.max_log_scale).exp()  # (1, H, 1, 1)
            q = q * (gain / torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_min(NORM_EPS))
            k = k * (1 / torch.linalg.vector_norm(k, dim=-1, keepdim=True).clamp_min(NORM_EPS))
            scale = 1.0
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.append(k, v)
        out = attention(q, k, v, mask, scale, self.dropout if self.training else 0.0)  # (B, H, n, D)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DropPath(nn.Module):
    """Stochastic depth: drop a sample's whole residual branch with probability p (and scale kept ones by
    ``1 / (1 - p)``). The per-sample factor ``(B, 1, ..., 1)`` multiplies the branch once (or the block's small
    gate), never the activation twice."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def keep_scale(self, x: Tensor) -> Tensor | None:
        """``keep / (1 - p)`` of shape ``(B, 1, ..., 1)`` (``x.ndim`` dims), or None when inactive."""
        if not self.training or self.p == 0:
            return None
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return keep.to(x.dtype) / (1 - self.p)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.keep_scale(x)
        return x if scale is None else x * scale

    def add(self, x: Tensor, branch: Tensor) -> Tensor:
        """``x + DropPath(branch)`` in one fused op."""
        scale = self.keep_scale(branch)
        return x + branch if scale is None else torch.addcmul(x, branch, scale)


class Block(nn.Module):
    """Pre-norm transformer block with AdaLN (see module docstring)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, qk_norm: bool, dropout: float,
                 drop_path: float, gate_init: float, k_bias: bool = True) -> None:
        super().__init__()
        self.width = width
        self.norm1 = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(width, heads, qk_norm, dropout, k_bias)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width),
                                 Dropout(dropout))
        self.drop_path = DropPath(drop_path)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        with torch.no_grad():
            self.ada[1].bias.zero_()
            self.ada[1].bias[: 2 * width] = gate_init

    def modulation(self, cond: Tensor) -> Tensor:
        """Gates, scales and shifts ``(B, 1, 6, C)`` of class embeddings ``cond (B, C)``."""
        return self.ada(cond).view(-1, 1, 6, self.width)

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor | None = None, rope=None,
                cache: KVCache | None = None, mod: Tensor | None = None) -> Tensor:
        """``mod``: :meth:`modulation` of ``cond`` computed beforehand (sampling: once per call, not per step)."""
        g1, g2, s1, s2, b1, b2 = (self.modulation(cond) if mod is None else mod).unbind(2)  # (B, 1, C) each
        h = self.attn(torch.addcmul(b1, self.norm1(x), 1 + s1), mask, rope, cache)
        scale = self.drop_path.keep_scale(x)
        x = torch.addcmul(x, g1 if scale is None else g1 * scale, h)
        h = self.mlp(torch.addcmul(b2, self.norm2(x), 1 + s2))
        scale = self.drop_path.keep_scale(x)
        return torch.addcmul(x, g2 if scale is None else g2 * scale, h)


# the final AdaLN + projection of the CE orders lives with the other heads (genarena.generators.heads); the old
# name stays importable
AdaLNHead = CEHead


class Transformer(nn.Module):
    """A stack of AdaLN blocks. ``forward(x (B, L, C), cond (B, C)) -> (B, L, C)``.

    With :meth:`start_cache` active, every call appends its tokens' keys/values to per-layer caches
    and attends to everything cached so far (incremental decoding); :meth:`stop_cache` drops them.
    """

    def __init__(self, depth: int, width: int, heads: int, mlp_ratio: float, qk_norm: bool, dropout: float,
                 drop_path: float, gate_init: float, k_bias: bool = True) -> None:
        super().__init__()
        self.depth, self.width, self.heads, self.mlp_ratio = depth, width, heads, mlp_ratio
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio, qk_norm, dropout, rate, gate_init, k_bias) for rate in rates)
        self.caches: list[KVCache] | None = None

    def start_cache(self, capacity: int | None = None) -> None:
        """Start incremental decoding; ``capacity``: the positions to preallocate (the sequence length)."""
        self.caches = [KVCache(capacity) for _ in self.blocks]

    def stop_cache(self) -> None:
        self.caches = None

    @property
    def cached_len(self) -> int:
        return 0 if not self.caches else len(self.caches[0])

    def modulations(self, cond: Tensor) -> list[Tensor]:
        """Every block's AdaLN modulation of ``cond (B, C)``, for :meth:`forward`'s ``mods`` (a sampling call
        computes them once: the class does not change between its steps)."""
        return [block.modulation(cond) for block in self.blocks]

    def forward(self, x: Tensor, cond: Tensor, mask: Tensor | None = None, rope=None,
                mods: list[Tensor] | None = None) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, cond, mask, rope, self.caches[i] if self.caches is not None else None,
                      None if mods is None else mods[i])
        return x

    # analytic cost --------------------------------------------------------------------------
    def flops(self, tokens: int, keys: int | None = None, adaln: bool = True) -> float:
        """Forward FLOPs (2 per multiply-add) of ``tokens`` queries attending to ``keys`` keys
        (default: ``tokens``), for one sequence; masks do not reduce the count (SDPA computes all). ``adaln=False``
        leaves out the AdaLN modulations (sampling computes them once per call: ``flops(0)`` is that cost)."""
        keys = tokens if keys is None else keys
        c, hidden = self.width, int(self.width * self.mlp_ratio)
        per_token = 2 * (3 * c * c + c * c + 2 * c * hidden)  # qkv, out proj, MLP
        attention = 4 * tokens * keys * c  # q k^T and attn v
        adaln = 2 * c * 6 * c if adaln else 0  # once per sequence
        return self.depth * (tokens * per_token + attention + adaln)


def init_weights(module: nn.Module, width: int, depth: int) -> None:
    """VAR's init: trunc-normal std sqrt(1 / 3C) for linears and embeddings, output projections
    divided by sqrt(2 depth). AdaLN layers keep their zero / gate init."""
    std = math.sqrt(1.0 / (3 * width))
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and ".ada." not in f".{name}." and not name.endswith("ada.1"):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
    for _name, m in module.named_modules():
        if isinstance(m, Block):
            m.attn.proj.weight.data.div_(math.sqrt(2 * depth))
            m.mlp[2].weight.data.div_(math.sqrt(2 * depth))

"""The LDM conv encoder/decoder (taming's VQGAN, Rombach et al. 2022) of VAR's VQVAE, MAR's KL-16 and LlamaGen's VQ-16.

Encoder ``(B, C_img, H, W) -> (B, C_out, H / f, W / f)``, ``f = 2 ** (len(ch_mult) - 1)``:

    conv_in 3x3 -> for each level i: num_res_blocks ResnetBlocks to width ch * ch_mult[i]
    (each followed by self-attention at the lowest level when ``attn``), then a stride-2 3x3 conv
    on the input padded by one row / column at the bottom / right (not after the last level)
    -> mid: ResnetBlock, self-attention, ResnetBlock -> GroupNorm, SiLU, conv_out 3x3.

Decoder ``(B, z, h, w) -> (B, C_img, H, W)``: conv_in 3x3 -> mid -> for each level from the lowest:
num_res_blocks + 1 ResnetBlocks (attention at the lowest level when ``attn``), nearest 2x upsampling
and a 3x3 conv (not after level 0) -> GroupNorm, SiLU, conv_out 3x3.

``ResnetBlock(x) = nin_shortcut(x) + conv2(SiLU(GN(conv1(SiLU(GN(x))))))`` (1x1 ``nin_shortcut`` only when
the width changes). Attention is single-head over the h*w positions:
``x + proj_out(v softmax(q^T k / sqrt(C)))`` with 1x1-conv ``q, k, v`` of ``GN(x)``.
GroupNorm has ``norm_groups`` groups (32 in every official model) and eps 1e-6.

Module names are LDM's (``down.{i}.block.{j}.conv1``, ``down.{i}.attn.{j}.q``, ``mid.attn_1``,
``up.{i}.upsample.conv``, ``norm_out``, ...), so the converters in :mod:`genarena.official` map official
state dicts onto this module by renaming keys (and splitting VAR's fused ``qkv``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm_groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, c_in, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(norm_groups, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over positions, ``(B, C, h, w) -> (B, C, h, w)``."""

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).flatten(2)  # (B, C, hw)
        k = self.k(y).flatten(2)  # (B, C, hw)
        v = self.v(y).flatten(2)  # (B, C, hw)
        attn = torch.softmax(q.transpose(1, 2) @ k * c ** -0.5, dim=-1)  # (B, hw_q, hw_k)
        out = (v @ attn.transpose(1, 2)).view(b, c, h, w)  # (B, C, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H/2, W/2)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, 2H, 2W)


class MidBlock(nn.Module):
    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, norm_groups)
        self.attn_1 = AttnBlock(channels, norm_groups)
        self.block_2 = ResnetBlock(channels, channels, norm_groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: ResnetBlocks ``block``, optional attention ``attn`` after each, then a resampler."""

    def __init__(self, c_in: int, c_out: int, num_blocks: int, attn: bool, resample: type[nn.Module] | None,
                 name: str, norm_groups: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(c_in if j == 0 else c_out, c_out, norm_groups)
                                   for j in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(c_out, norm_groups) for _ in range(num_blocks if attn else 0))
        self.resample_name = name
        if resample is not None:
            self.add_module(name, resample(c_out))

    def forward(self, x: Tensor) -> Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[j](x)
        resample = getattr(self, self.resample_name, None)
        return x if resample is None else resample(x)


class Encoder(nn.Module):
    def __init__(self, in_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int, out_channels: int,
                 attn: bool, norm_groups: int) -> None:
        super().__init__()
        last = len(ch_mult) - 1
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        widths = [ch] + [ch * m for m in ch_mult]
        self.down = nn.ModuleList(
            Level(widths[i], widths[i + 1], num_res_blocks, attn and i == last, Downsample if i < last else None,
                  "downsample", norm_groups)
            for i in range(len(ch_mult)))
        self.mid = MidBlock(widths[-1], norm_groups)
        self.norm_out = nn.GroupNorm(norm_groups, widths[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[-1], out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (B, ch, H, W)
        for level in self.down:
            h = level(h)  # (B, ch * mult, H / f, W / f) after the last level
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_out, H / f, W / f)


class Decoder(nn.Module):
    def __init__(self, out_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int, z_channels: int,
                 attn: bool, norm_groups: int) -> None:
        super().__init__()
        last = len(ch_mult) - 1
        self.conv_in = nn.Conv2d(z_channels, ch * ch_mult[-1], 3, padding=1)
        self.mid = MidBlock(ch * ch_mult[-1], norm_groups)
        # up[i] works at level i's resolution; it runs from the lowest level (i = last) to level 0
        c_in = [ch * ch_mult[min(i + 1, last)] for i in range(len(ch_mult))]
        self.up = nn.ModuleList(
            Level(c_in[i], ch * ch_mult[i], num_res_blocks + 1, attn and i == last, Upsample if i > 0 else None,
                  "upsample", norm_groups)
            for i in range(len(ch_mult)))
        self.norm_out = nn.GroupNorm(norm_groups, ch * ch_mult[0], eps=1e-6)
        self.conv_out = nn.Conv2d(ch * ch_mult[0], out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))  # (B, ch * ch_mult[-1], h, w)
        for level in reversed(self.up):
            h = level(h)  # (B, C, H, W) after level 0
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, C_img, H, W)

"""Conv encoder/decoder shared by all tokenizers (a small taming/LDM-style ResNet).

Encoder: ``(B, C_img, H, W) -> (B, C_out, H / f, W / f)`` with ``f = 2 ** (len(ch_mult) - 1)``.
Decoder: the mirror image, ``(B, z, h, w) -> (B, C_img, H, W)``.
"""

from __future__ import annotations

import torch.nn as nn
from torch import Tensor


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at most 32 groups of at least 8 channels (taming/LDM use 32 groups of 4-16).

    At toy widths GroupNorm(32) would be a per-channel instance norm, which erases every image's
    per-channel mean and so the global content the coarsest msvq scale (an image-wide average) encodes.
    """
    return nn.GroupNorm(max(1, min(32, channels // 8)), channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            group_norm(c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Encoder(nn.Module):
    def __init__(self, in_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int, out_channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        c = ch
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, ch * mult))
                c = ch * mult
            if level < len(ch_mult) - 1:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        layers += [ResBlock(c, c), group_norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, out_channels: int, ch: int, ch_mult: list[int], num_res_blocks: int, z_channels: int) -> None:
        super().__init__()
        c = ch * ch_mult[-1]
        layers: list[nn.Module] = [nn.Conv2d(z_channels, c, 3, padding=1), ResBlock(c, c)]
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, ch * mult))
                c = ch * mult
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        layers += [group_norm(c), nn.SiLU(), nn.Conv2d(c, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

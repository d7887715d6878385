"""Stage-1 losses: reconstruction, an optional perceptual term and an optional PatchGAN.

- Perceptual: distance between unit-normalised VGG16 features (LPIPS without its learned linear
  heads). Its weights are never downloaded: they are read from a local torchvision ``vgg16`` state
  dict, and when there is none the term is switched off with one log line.
- PatchGAN (pix2pix / taming): a conv discriminator scoring overlapping patches, hinge loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


def reconstruction_loss(recon: Tensor, target: Tensor, kind: str) -> Tensor:
    if kind == "l1":
        return F.l1_loss(recon, target)
    if kind == "l2":
        return F.mse_loss(recon, target)
    raise ValueError(f"recon_loss={kind!r}; choose l1 or l2")


class PerceptualLoss(nn.Module):
    """Mean over VGG16 stages of the squared distance between channel-normalised features."""

    STAGES = (4, 9, 16, 23, 30)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        from torchvision.models import vgg16  # lazy: the perceptual loss is optional

        net = vgg16()
        net.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
        self.features = net.features[: self.STAGES[-1]].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        def prep(t):
            t = t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t
            return ((t + 1) / 2 - self.mean) / self.std

        x, y, loss = prep(x), prep(y), x.new_zeros(())
        for i, layer in enumerate(self.features):
            x, y = layer(x), layer(y)
            if i + 1 in self.STAGES:
                loss = loss + (F.normalize(x, dim=1) - F.normalize(y, dim=1)).pow(2).sum(1).mean()
        return loss / len(self.STAGES)


def build_perceptual_loss(weight: float, weights_path: str | None) -> PerceptualLoss | None:
    """The perceptual term, or None (with one log line) when it is off or its weights are not on disk."""
    if weight <= 0:
        return None
    if not weights_path or not Path(weights_path).expanduser().is_file():
        log.warning(
            "perceptual loss disabled: tokenizer.perceptual.weights_path=%s is not a file (weights are never "
            "downloaded; point it at a torchvision vgg16 state dict to enable it)", weights_path)
        return None
    return PerceptualLoss(str(Path(weights_path).expanduser()))


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``(B, C, H, W)`` -> patch logits ``(B, 1, H', W')``."""

    def __init__(self, in_channels: int, channels: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_next = channels * min(2 ** i, 8)
            mods += [nn.Conv2d(c, c_next, 4, 2 if i < layers - 1 else 1, 1), nn.GroupNorm(1, c_next),
                     nn.LeakyReLU(0.2)]
            c = c_next
        mods.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    return -fake_logits.mean()

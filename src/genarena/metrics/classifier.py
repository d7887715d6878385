"""The domain classifier: a small CNN trained on a dataset's real training split.

It judges samples (class accuracy of class-conditional generations) and, registered with
torch-fidelity, is the offline feature extractor: its penultimate layer ``(B, feature_dim)`` serves
FID / KID / precision-recall and its logits ``(B, num_classes)`` serve the Inception Score.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.errors import CheckpointError

log = logging.getLogger(__name__)


class DomainClassifier(nn.Module):
    """Images ``(B, C, R, R)`` in ``[-1, 1]`` -> logits ``(B, num_classes)``; ``features`` gives the pool layer."""

    def __init__(self, in_channels: int, num_classes: int, ch: int, feature_dim: int) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes

        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(in_channels, ch), *block(ch, ch), nn.MaxPool2d(2),
            *block(ch, 2 * ch), *block(2 * ch, 2 * ch), nn.MaxPool2d(2),
            *block(2 * ch, 4 * ch), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * ch, feature_dim), nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x)))

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        return f, self.head(f)


def random_translate(x: Tensor, max_shift: int) -> Tensor:
    """Shift each image by up to ``max_shift`` pixels (zero fill): ``(B, C, H, W)`` -> same."""
    b, _, h, w = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b, 2), device=x.device).float()
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * shifts[:, 0] / w
    theta[:, 1, 2] = -2 * shifts[:, 1] / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False) - 1


def classifier_cache_path(cache_dir: str | Path, data_cfg) -> Path:
    """Where the classifier of a dataset is cached: one per (name, resolution, channels)."""
    return Path(cache_dir) / "classifiers" / f"{data_cfg.name}-r{data_cfg.resolution}-c{data_cfg.channels}.pt"


def save_classifier(model: DomainClassifier, path: Path, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)


def load_classifier(path: str | Path) -> tuple[DomainClassifier, dict[str, Any]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        meta = blob["meta"]
        model = DomainClassifier(meta["channels"], meta["num_classes"], meta["ch"], meta["feature_dim"])
        model.load_state_dict(blob["state_dict"])
    except FileNotFoundError:
        raise CheckpointError(f"domain classifier {path} does not exist") from None
    except Exception as e:
        raise CheckpointError(
            f"domain classifier {path} is corrupt ({type(e).__name__}: {e}); delete it to retrain"
        ) from None
    return model.eval().requires_grad_(False), meta

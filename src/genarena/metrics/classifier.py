"""The domain classifier: a small CNN trained on a dataset's real training split.

It judges samples (class accuracy of class-conditional generations) and, registered with
torch-fidelity, is the offline feature extractor: its penultimate layer ``(B, feature_dim)`` serves
FID / KID / precision-recall and its logits ``(B, num_classes)`` serve the Inception Score.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor

from genarena.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

# data keys that change how a split is loaded, not which images it holds
LOADER_KEYS = ("batch_size", "num_workers", "download")
# classifier keys that decide whether a cached classifier is used, not how it is trained (no part of its cache key)
USE_KEYS = ("min_val_acc",)


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


def data_identity(data_cfg: Any) -> dict[str, Any]:
    """The data config without :data:`LOADER_KEYS`: which images a split holds, as plain values."""
    container = OmegaConf.to_container(data_cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(data_cfg) \
        else dict(data_cfg)
    return {k: v for k, v in container.items() if k not in LOADER_KEYS}


def classifier_key(data_cfg: Any, classifier_cfg: Any) -> str:
    """sha1 (8 hex digits) of what a domain classifier is trained from: the data (:func:`data_identity`) and the
    whole ``classifier`` block but :data:`USE_KEYS`."""
    clf = OmegaConf.to_container(classifier_cfg, resolve=True) if OmegaConf.is_config(classifier_cfg) \
        else dict(classifier_cfg)
    blob = json.dumps({"data": data_identity(data_cfg), "classifier": {k: v for k, v in clf.items()
                                                                       if k not in USE_KEYS}},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def classifier_cache_path(cache_dir: str | Path, data_cfg, classifier_cfg) -> Path:
    """Where the classifier of a dataset is cached: one per (data, classifier training config),
    ``<name>-r<resolution>-c<channels>-<classifier_key>.pt``."""
    name = f"{data_cfg.name}-r{data_cfg.resolution}-c{data_cfg.channels}-{classifier_key(data_cfg, classifier_cfg)}"
    return Path(cache_dir) / "classifiers" / f"{name}.pt"


def save_classifier(model: DomainClassifier, path: Path, meta: dict[str, Any]) -> None:
    """A plain container: ``{"state_dict", "meta"}`` (``meta``: sizes, data, classifier config, ``val_acc``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    tmp.replace(path)


def load_classifier(path: str | Path) -> tuple[DomainClassifier, dict[str, Any]]:
    """The classifier (eval mode, no grads) and its ``meta``, read with ``weights_only=True``."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob["meta"]
        model = DomainClassifier(meta["channels"], meta["num_classes"], meta["ch"], meta["feature_dim"])
        model.load_state_dict(blob["state_dict"])
    except FileNotFoundError:
        raise CheckpointError(f"domain classifier {path} does not exist") from None
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "empty or truncated"
        raise CheckpointError(
            f"domain classifier {path} is corrupt or not a genarena classifier ({type(e).__name__}: {reason}); "
            "delete it to retrain"
        ) from None
    return model.eval().requires_grad_(False), meta


def check_accuracy(path: Path, meta: dict[str, Any], min_val_acc: float, retrain: str) -> None:
    """:class:`ConfigError` when the classifier's recorded validation accuracy is missing or below ``min_val_acc``:
    a weak judge gives misleading FID and class accuracy. ``retrain`` says how to train a better one."""
    acc = meta.get("val_acc")
    if acc is None or acc < min_val_acc:
        got = "records no validation accuracy" if acc is None else f"has validation accuracy {acc:.3f}"
        raise ConfigError(f"the cached domain classifier {path} {got}, below classifier.min_val_acc={min_val_acc}, so "
                          f"its features and class accuracy would mislead; {retrain}, or lower classifier.min_val_acc")

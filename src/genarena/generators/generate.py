"""Batched, seeded generation of images from a trained generator (shared by sample, eval and compare)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from genarena.config import check_sampling
from genarena.errors import ConfigError
from genarena.generators.base import Generator
from genarena.tokenizers import Tokenizer


def to_uint8(images: Tensor) -> Tensor:
    """Images in ``[-1, 1]`` -> uint8 ``[0, 255]``, same shape."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def balanced_labels(n: int, num_classes: int, device=None) -> Tensor:
    """``n`` labels spread evenly over the classes, sorted: ``(n,)``."""
    return (torch.arange(n, device=device) * num_classes // max(n, 1)).clamp(max=num_classes - 1)


def merge_sampling(run_sampling: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A run's sampling config with the non-None ``overrides``; an option the paradigm lacks, or a value out of
    its range (a negative temperature, ...), is an error."""
    check_sampling("sampling", overrides)
    out = dict(run_sampling)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in out:
            raise ConfigError(f"sampling.{key}={value} does not apply to this paradigm (it takes "
                              f"{', '.join(f'sampling.{k}' for k in out)})")
        out[key] = value
    return out


@dataclass
class Generated:
    images: Tensor  # uint8 (N, C, H, W) on the CPU
    labels: Tensor  # (N,)
    seconds: float  # wall time of sampling + decoding

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, len(self.labels))


@torch.no_grad()
def generate(generator: Generator, tokenizer: Tokenizer, labels: Tensor, sampling: dict[str, Any], seed: int,
             batch_size: int, device: torch.device | str | None = None, progress: bool = True) -> Generated:
    """Sample and decode one image per label, in batches; batch i draws from ``Generator(seed + i)``,
    so a fixed seed and batch size give the same images."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator.to(device).eval()
    tokenizer.to(device).eval()
    out = []
    start = time.perf_counter()
    chunks = labels.split(batch_size)
    for i, chunk in enumerate(tqdm(chunks, desc="sampling", disable=not progress, leave=False)):
        g = torch.Generator(device=device).manual_seed(seed + i)
        tokens = generator.sample(chunk.to(device), generator=g, **sampling)
        out.append(to_uint8(tokenizer.decode(tokens)).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return Generated(torch.cat(out), labels.cpu(), time.perf_counter() - start)

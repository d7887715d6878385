"""The one LightningDataModule: ``(image (B, C, R, R) in [-1, 1], label (B,))`` batches."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from genarena.data.order import OrderedDataModule
from genarena.data.sources import ImageSplits, load_source


class ImageDataModule(OrderedDataModule):
    """Wraps a source from :mod:`genarena.data.sources`; resolution, channels and batch come from config. The
    training and validation loaders follow :mod:`genarena.data.order` (``seed``: the run's seed)."""

    def __init__(self, cfg, seed: int = 0) -> None:
        super().__init__(seed)
        self.cfg = cfg
        self._splits: ImageSplits | None = None

    @property
    def splits(self) -> ImageSplits:
        if self._splits is None:
            self._splits = load_source(self.cfg)
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        _ = self.splits

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    def dataset(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(f"split={split!r}; choose train or val")
        return getattr(self.splits, split)

    def loader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Every image of a split once, in order (encoding, reference images); it draws nothing from the global RNG."""
        workers = self.cfg.num_workers
        return DataLoader(self.dataset(split), batch_size=batch_size or self.cfg.batch_size, shuffle=False,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self.ordered_loader(self.dataset("train"), self.cfg.batch_size, train=True,
                                   num_workers=self.cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.ordered_loader(self.dataset("val"), self.cfg.batch_size, train=False,
                                   num_workers=self.cfg.num_workers)

    def real_images_uint8(self, split: str, limit: int | None = None) -> tuple[Tensor, Tensor]:
        """All (or the first ``limit``) images of a split as uint8 ``(N, C, R, R)`` with labels ``(N,)``."""
        ds = self.dataset(split)
        images = getattr(ds, "images", None)
        if images is not None:  # in-memory source: no conversion round trip
            n = len(images) if limit is None else min(limit, len(images))
            return images[:n], ds.labels[:n]
        xs, ys = [], []
        for x, y in self.loader(split):
            xs.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
            ys.append(y)
            if limit is not None and sum(len(t) for t in xs) >= limit:
                break
        return torch.cat(xs)[:limit], torch.cat(ys)[:limit]

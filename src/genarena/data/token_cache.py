"""Stage-2 data: tokens of a frozen tokenizer, computed once per (tokenizer checkpoint, dataset split).

The cache key hashes the checkpoint file's bytes and the data config that shapes the images, so a
retrained tokenizer or a different resolution never reuses stale tokens. Continuous (``kl``) tokens
are cached as posterior mean and std and sampled afresh every time a batch is drawn (as MAR does);
with ``data.hflip`` the tokens of the flipped images are cached too and picked at random.

Encoding never touches the training RNG (it runs under a forked RNG and its loader has its own generator), so a
run gives the same losses whether its cache was warm or cold. Processes that share a cache (the ranks of a
distributed run, parallel sweep jobs) take a file lock per cache file: the first encodes and writes it, the
others wait and then read it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from genarena.data.datamodule import ImageDataModule
from genarena.data.order import OrderedDataModule, rand, sample_generator
from genarena.tokenizers import Tokenizer

log = logging.getLogger(__name__)

IMAGE_KEYS = ("name", "root", "resolution", "channels", "val_fraction", "split_seed", "num_classes", "num_images")


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_key(tokenizer_ckpt: str | Path, data_cfg, split: str, flipped: bool = False) -> str:
    data = {k: data_cfg.get(k) for k in IMAGE_KEYS if k in data_cfg}
    blob = json.dumps({"ckpt": file_digest(tokenizer_ckpt), "data": data, "split": split, "flip": flipped},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@torch.no_grad()
def encode_split(tokenizer: Tokenizer, loader: DataLoader, device: torch.device, desc: str,
                 flip: bool = False) -> dict[str, Tensor]:
    """Tokens of every image a loader yields: ``{"tokens", "labels"[, "std"]}`` on the CPU."""
    tokens, stds, labels = [], [], []
    tokenizer.to(device).eval()
    for x, y in tqdm(loader, desc=desc, leave=False):
        x = x.to(device)
        if flip:
            x = x.flip(-1)
        if tokenizer.kind == "continuous":
            mu, std = tokenizer.encode_distribution(x)
            tokens.append(mu.cpu())
            stds.append(std.cpu())
        else:
            tokens.append(tokenizer.encode(x).cpu())
        labels.append(y)
    out = {"tokens": torch.cat(tokens), "labels": torch.cat(labels)}
    if stds:
        out["std"] = torch.cat(stds)
    return out


class TokenDataset(Dataset):
    """Items ``(tokens, label)``; continuous tokens are drawn from the cached posterior each time. A key
    ``(index, seed)`` (the training sampler's) draws the flip and the posterior noise from that seed."""

    def __init__(self, cached: dict[str, Tensor], flipped: dict[str, Tensor] | None = None,
                 sample_posterior: bool = True) -> None:
        self.cached, self.flipped, self.sample_posterior = cached, flipped, sample_posterior

    def __len__(self) -> int:
        return len(self.cached["labels"])

    def __getitem__(self, key) -> tuple[Tensor, int]:
        i, generator = sample_generator(key)
        src = self.cached if self.flipped is None or rand(generator) < 0.5 else self.flipped
        tok = src["tokens"][i]
        if "std" in src and self.sample_posterior:
            noise = torch.randn(tok.shape, generator=generator, dtype=tok.dtype)
            tok = tok + src["std"][i] * noise
        return tok, int(src["labels"][i])


class TokenDataModule(OrderedDataModule):
    """Serves cached tokens of the train and val splits of ``data_cfg`` for one tokenizer checkpoint, in the
    order of :mod:`genarena.data.order` (``seed``: the run's seed)."""

    def __init__(self, data_cfg, tokenizer: Tokenizer, tokenizer_ckpt: str | Path, cache_dir: str | Path,
                 seed: int = 0) -> None:
        super().__init__(seed)
        self.data_cfg, self.tokenizer, self.ckpt = data_cfg, tokenizer, Path(tokenizer_ckpt)
        self.cache_dir = Path(cache_dir) / "tokens"
        self.images = ImageDataModule(data_cfg, seed)
        self._data: dict[str, TokenDataset] = {}

    @property
    def num_classes(self) -> int:
        return self.images.num_classes

    def _load_or_encode(self, split: str, flip: bool = False) -> dict[str, Tensor]:
        path = self.cache_dir / f"{cache_key(self.ckpt, self.data_cfg, split, flip)}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):  # one process encodes; the others wait here, then read its file
            if path.is_file():
                try:
                    return torch.load(path, map_location="cpu", weights_only=True)
                except Exception as e:  # a cache written by an older genarena, or a damaged disk: rebuild it
                    log.warning("token cache %s unreadable (%s); re-encoding", path, e)
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            loader = self.images.loader(split, batch_size=256)
            desc = f"encoding {split}{' (flipped)' if flip else ''}"
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # training RNG untouched
                data = encode_split(self.tokenizer, loader, device, desc, flip)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(data, tmp)
            tmp.replace(path)
            log.info("cached %d %s tokens at %s", len(data["labels"]), split, path)
            return data

    def setup(self, stage: str | None = None) -> None:
        if self._data:
            return
        train = self._load_or_encode("train")
        flipped = self._load_or_encode("train", flip=True) if self.data_cfg.hflip else None
        self._data = {"train": TokenDataset(train, flipped), "val": TokenDataset(self._load_or_encode("val"),
                                                                                   sample_posterior=False)}

    def dataset(self, split: str) -> TokenDataset:
        self.setup()
        return self._data[split]

    def train_dataloader(self) -> DataLoader:
        return self.ordered_loader(self.dataset("train"), self.data_cfg.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        return self.ordered_loader(self.dataset("val"), self.data_cfg.batch_size, train=False)

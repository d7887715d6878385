"""The ``Tokenizer`` interface every generator trains against.

Token layouts (what ``encode`` returns and ``decode`` takes):

- ``discrete``   (``vq``):   LongTensor ``(B, h*w)`` in raster order, values in ``[0, vocab_size)``.
- ``multiscale`` (``msvq``): LongTensor ``(B, sum_k pn_k^2)``, scales concatenated small to large,
  each in raster order.
- ``continuous`` (``kl``):   FloatTensor ``(B, h*w, token_dim)``, about unit variance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import torch.nn as nn
from torch import Tensor

from genarena.tokenizers.codebook import Codebook
from genarena.tokenizers.nets import Decoder, Encoder

KINDS = ("discrete", "multiscale", "continuous")


class Tokenizer(nn.Module, ABC):
    """Conv encoder -> bottleneck -> conv decoder. Images are ``(B, C, H, W)`` in ``[-1, 1]``."""

    kind: ClassVar[str]
    vocab_size: int | None = None
    token_dim: int | None = None
    scales: tuple[int, ...] | None = None

    def __init__(self, image_channels: int, resolution: int, ch: int, ch_mult: list[int],
                 num_res_blocks: int, z_channels: int, encoder_out: int | None = None) -> None:
        super().__init__()
        self.image_channels, self.resolution, self.z_channels = image_channels, resolution, z_channels
        self.downsample = 2 ** (len(ch_mult) - 1)
        if resolution % self.downsample:
            raise ValueError(f"resolution {resolution} is not divisible by the downsampling {self.downsample}")
        side = resolution // self.downsample
        self.grid = (side, side)
        self.encoder = Encoder(image_channels, ch, list(ch_mult), num_res_blocks, encoder_out or z_channels)
        self.decoder = Decoder(image_channels, ch, list(ch_mult), num_res_blocks, z_channels)

    @property
    def seq_len(self) -> int:
        """Number of tokens per image."""
        return self.grid[0] * self.grid[1]

    @abstractmethod
    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training pass: ``(reconstruction, aux)``; ``aux["loss"]`` is the weighted bottleneck loss."""

    @abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """Images -> tokens (layout by ``kind``, see module docstring)."""

    @abstractmethod
    def decode(self, tokens: Tensor) -> Tensor:
        """Tokens -> images ``(B, C, H, W)`` clamped to ``[-1, 1]``."""

    # hooks the training loop calls, so that it needs no knowledge of the kinds ---------------------------
    def trained_codebook(self) -> Codebook | None:
        """The codebook whose usage is tracked and whose dead codes are restarted in training (None: no codebook)."""
        return None

    def usage_groups(self, tokens: Tensor) -> list[Tensor]:
        """Token ids grouped for codebook-usage statistics, one group per codebook usage row (``[]`` for
        continuous tokens)."""
        return [] if self.vocab_size is None else [tokens]

    def reconstruction_grids(self, images: Tensor) -> dict[str, list[Tensor]]:
        """``{name: rows of images}`` shown during training: the originals, then their reconstruction."""
        return {"reconstruction": [images, self.decode(self.encode(images))]}

    def calibrate(self, batches: Iterable[Tensor]) -> dict[str, float]:
        """Fit data-dependent constants after training from image batches (``kl``: the scale factor); returns
        them for the run's metrics. Nothing to fit by default."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Flat facts a generator or a report needs about this tokenizer."""
        return {"kind": self.kind, "grid": list(self.grid), "seq_len": self.seq_len,
                "vocab_size": self.vocab_size, "token_dim": self.token_dim,
                "scales": list(self.scales) if self.scales else None}

"""The ``Tokenizer`` interface every generator trains against.

Token layouts (what ``encode`` returns and ``decode`` takes):

- ``discrete``   (``vq``):   LongTensor ``(B, h*w)`` in raster order, values in ``[0, vocab_size)``.
- ``multiscale`` (``msvq``): LongTensor ``(B, sum_k pn_k^2)``, scales concatenated small to large,
  each in raster order.
- ``continuous`` (``kl``):   FloatTensor ``(B, h*w, token_dim)``, about unit variance.
- ``multiscale_continuous`` (``mskl``): FloatTensor ``(B, sum_k pn_k^2, token_dim)``, the residual of every scale
  (each about unit variance) concatenated small to large, each in raster order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch.nn as nn
from torch import Tensor

from genarena.tokenizers import ldm as ldm_nets
from genarena.tokenizers import nets
from genarena.tokenizers.codebook import Codebook

KINDS = ("discrete", "multiscale", "continuous", "multiscale_continuous")
NETS = ("genarena", "ldm")


class Tokenizer(nn.Module, ABC):
    """Conv encoder -> quant_conv -> bottleneck -> post_quant_conv -> conv decoder.

    Images are ``(B, C, H, W)`` in ``[-1, 1]``. ``net`` picks the encoder/decoder: ``genarena``, the small
    ResNet of :mod:`~genarena.tokenizers.nets` (its bottleneck works on the ``z_channels`` encoder output
    directly: both quant convs are identities), or ``ldm``, the LDM encoder/decoder of the official
    tokenizers (:mod:`~genarena.tokenizers.ldm`) with ``ldm = {embed_dim, quant_conv_kernel, encoder_attn,
    decoder_attn, norm_groups}``: ``quant_conv`` maps ``z_channels`` (twice that with ``double_z``) to
    ``embed_dim`` (twice), the code / token dimension, and ``post_quant_conv`` maps ``embed_dim`` back to
    ``z_channels``.
    """

    kind: ClassVar[str]
    vocab_size: int | None = None
    token_dim: int | None = None
    scales: tuple[int, ...] | None = None

    def __init__(self, image_channels: int, resolution: int, ch: int, ch_mult: list[int],
                 num_res_blocks: int, z_channels: int, *, net: str, ldm: Mapping[str, Any] | None,
                 double_z: bool = False) -> None:
        super().__init__()
        self.image_channels, self.resolution, self.z_channels = image_channels, resolution, z_channels
        self.downsample = 2 ** (len(ch_mult) - 1)
        if resolution % self.downsample:
            raise ValueError(f"resolution {resolution} is not divisible by the downsampling {self.downsample}")
        side = resolution // self.downsample
        self.grid = (side, side)
        moments = 2 if double_z else 1  # a KL encoder predicts mean and log-variance
        if net == "genarena":
            self.code_dim = z_channels
            self.encoder = nets.Encoder(image_channels, ch, list(ch_mult), num_res_blocks, moments * z_channels)
            self.decoder = nets.Decoder(image_channels, ch, list(ch_mult), num_res_blocks, z_channels)
            self.quant_conv: nn.Module = nn.Identity()
            self.post_quant_conv: nn.Module = nn.Identity()
        elif net == "ldm":
            if ldm is None:
                raise ValueError("net='ldm' needs its ldm settings")
            self.code_dim = ldm["embed_dim"] or z_channels
            k, groups = ldm["quant_conv_kernel"], ldm["norm_groups"]
            self.encoder = ldm_nets.Encoder(image_channels, ch, list(ch_mult), num_res_blocks, moments * z_channels,
                                            ldm["encoder_attn"], groups)
            self.decoder = ldm_nets.Decoder(image_channels, ch, list(ch_mult), num_res_blocks, z_channels,
                                            ldm["decoder_attn"], groups)
            self.quant_conv = nn.Conv2d(moments * z_channels, moments * self.code_dim, k, padding=k // 2)
            self.post_quant_conv = nn.Conv2d(self.code_dim, z_channels, k, padding=k // 2)
        else:
            raise ValueError(f"net={net!r}; choose one of {', '.join(NETS)}")
        self.net = net

    def encode_features(self, images: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` -> ``quant_conv(encoder(x))``: ``(B, code_dim, h, w)`` (2 code_dim for KL)."""
        return self.quant_conv(self.encoder(images))

    def decode_features(self, z: Tensor) -> Tensor:
        """Bottleneck output ``(B, code_dim, h, w)`` -> images ``decoder(post_quant_conv(z))``, not clamped."""
        return self.decoder(self.post_quant_conv(z))

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

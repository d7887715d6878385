"""``vq``: single-scale VQ-VAE tokenizer (van den Oord et al. 2017; VQGAN's bottleneck).

Encoder features ``(B, D, h, w)`` are snapped to their nearest code; the straight-through estimator
``z + sg[e - z]`` passes decoder gradients to the encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from genarena.tokenizers.base import Tokenizer
from genarena.tokenizers.codebook import Codebook


class VQTokenizer(Tokenizer):
    kind = "discrete"

    def __init__(self, image_channels: int, resolution: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                 z_channels: int, vocab_size: int, beta: float, l2_norm_codes: bool, entropy_weight: float,
                 entropy_temperature: float, dead_code_threshold: float, usage_decay: float,
                 net: str, ldm: Mapping[str, Any] | None) -> None:
        super().__init__(image_channels, resolution, ch, ch_mult, num_res_blocks, z_channels, net=net, ldm=ldm)
        self.vocab_size = vocab_size
        self.codebook = Codebook(vocab_size, self.code_dim, beta, l2_norm_codes, entropy_weight,
                                 entropy_temperature, dead_code_threshold, usage_decay)

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``z (B, D, h, w)`` -> ``(z_q with straight-through grads, idx (B, h, w), aux)``."""
        codes, idx, entropy = self.codebook.quantize(z)
        vq = self.codebook.vq_loss(codes, z)
        z_st = (z if not self.codebook.l2_norm else torch.nn.functional.normalize(z, dim=1))
        z_q = z_st + (codes - z_st).detach()
        loss = vq + self.codebook.entropy_weight * entropy
        return z_q, idx, {"loss": loss, "vq_loss": vq.detach(), "entropy_loss": entropy.detach()}

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        z = self.encode_features(images)
        z_q, idx, aux = self.quantize(z)
        aux["indices"] = idx.flatten(1)
        aux["restart_candidates"] = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        return self.decode_features(z_q), aux

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.codebook.lookup(self.encode_features(images)).flatten(1)

    def decode(self, tokens: Tensor) -> Tensor:
        h, w = self.grid
        return self.decode_features(self.codebook.embed(tokens.view(-1, h, w))).clamp(-1, 1)

    def trained_codebook(self) -> Codebook:
        return self.codebook

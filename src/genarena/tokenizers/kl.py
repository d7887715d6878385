"""``kl``: MAR's continuous KL-VAE tokenizer (LDM's KL autoencoder at toy scale).

The encoder predicts a diagonal Gaussian ``N(mu, sigma^2)`` per latent position; training samples
it and adds ``kl_weight * KL(q || N(0, I))`` (summed over channels, averaged over positions).
Tokens are ``scale_factor * mu`` as ``(B, h*w, C)``; ``scale_factor`` is measured on the training data
(1 / std of the latents) so that tokens have about unit variance, as MAR's 0.2325 does for KL-16.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from genarena.tokenizers.base import Tokenizer


class KLTokenizer(Tokenizer):
    kind = "continuous"

    def __init__(self, image_channels: int, resolution: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                 z_channels: int, kl_weight: float, scale_factor: float | None, net: str,
                 ldm: Mapping[str, Any] | None) -> None:
        super().__init__(image_channels, resolution, ch, ch_mult, num_res_blocks, z_channels, double_z=True,
                         net=net, ldm=ldm)
        self.token_dim = self.code_dim
        self.kl_weight = kl_weight
        self.register_buffer("scale_factor", torch.tensor(1.0 if scale_factor is None else float(scale_factor)))
        self.scale_factor_fixed = scale_factor is not None

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> ``(mu, std)``, each ``(B, C, h, w)`` (unscaled)."""
        mu, logvar = self.encode_features(images).chunk(2, dim=1)
        return mu, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        mu, std = self.posterior(images)
        z = mu + std * torch.randn_like(std)
        kl = 0.5 * (mu.pow(2) + std.pow(2) - 1.0 - 2 * std.log()).sum(1).mean()
        return self.decode_features(z), {"loss": self.kl_weight * kl, "kl": kl.detach()}

    def to_tokens(self, latent: Tensor) -> Tensor:
        """``(B, C, h, w)`` unscaled latent -> ``(B, h*w, C)`` scaled tokens."""
        return (latent * self.scale_factor).flatten(2).transpose(1, 2)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.to_tokens(self.posterior(images)[0])

    @torch.no_grad()
    def encode_distribution(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Scaled token mean and std, each ``(B, h*w, C)``: cached once, sampled every epoch (as MAR)."""
        mu, std = self.posterior(images)
        return self.to_tokens(mu), self.to_tokens(std)

    def decode(self, tokens: Tensor) -> Tensor:
        h, w = self.grid
        z = (tokens / self.scale_factor).transpose(1, 2).reshape(tokens.shape[0], -1, h, w)
        return self.decode_features(z).clamp(-1, 1)

    @torch.no_grad()
    def set_scale_factor(self, latent_std: float) -> None:
        """Set ``scale_factor = 1 / latent_std`` unless the config fixed it."""
        if not self.scale_factor_fixed:
            self.scale_factor.fill_(1.0 / max(latent_std, 1e-8))

    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor]) -> dict[str, float]:
        """``scale_factor = 1 / std`` of the posterior means over ``batches`` of images (unless fixed)."""
        latents = [self.posterior(x)[0].flatten() for x in batches]
        self.set_scale_factor(torch.cat(latents).std().item())
        return {"scale_factor": float(self.scale_factor)}

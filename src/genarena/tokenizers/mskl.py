"""``mskl``: a continuous multi-scale tokenizer, ``msvq``'s residual pyramid on a KL latent without quantization.

The encoder, decoder and Gaussian posterior are the ``kl`` tokenizer's (:class:`~genarena.tokenizers.kl.KLTokenizer`),
trained the same way (reconstruction of a posterior sample + ``kl_weight * KL``). On the posterior mean ``f (B, D, H,
W)`` the pyramid splits the latent into scales ``k = 0 .. K-1`` of ``pn_k x pn_k`` tokens (small to large,
``pn_{K-1} = H``)::

    r_k = area_down(f - sum_{j<k} phi_j(up(r_j)), pn_k)               (B, D, pn_k, pn_k)

with ``up`` the bicubic upsampling to ``H`` and ``phi_j(h) = (1 - r) h + r conv3x3(h)`` (``msvq``'s refinement, its
``quant_resi`` and ``share_quant_resi`` sharing over the upsampled scales). The last scale is full size and takes no
``phi``, so ``r_{K-1}`` is exactly what the coarser scales leave and ``sum_{k<K-1} phi_k(up(r_k)) + r_{K-1} = f``:
the scales sum back to the latent (up to float rounding), whatever ``phi`` is.

Training: reconstruction therefore cannot train ``phi``; it is trained so that every partial sum approximates the
latent, ``pyramid_weight * mean_{k<K-1} mse(f_hat_{<=k}, sg[f])`` (a good coarse-to-fine prefix, what the coarse
scales of a next-scale generator are meant to be), on the detached posterior mean: the encoder and decoder learn
exactly ``kl``'s objective. ``quant_resi = 0`` makes every ``phi`` the identity (a plain residual pyramid).

Why its own run rather than a trained ``kl`` run's weights: it is the simplest correct choice, one
``genarena-train task=tokenizer tokenizer=mskl`` like every tokenizer (``tokenizer.ckpt=auto`` finds it by name,
the generator checkpoint carries it), with the encoder/decoder objective of ``kl``; the pyramid is a deterministic
transform of its latent.

Tokens (kind ``multiscale_continuous``): each scale's residual divided by that scale's standard deviation
(``scale_stds``, measured on the training data after training, like ``kl``'s scale factor), concatenated small to
large, each scale in raster order: ``(B, sum_k pn_k^2, D)``, every scale about unit variance. They are computed from
the posterior mean (the token cache stores them as they are; ``kl``'s cache samples the posterior instead).
A next-scale generator (``var_diffusion``) is teacher-forced with the cumulative ``f_hat`` after scale k, times
``scale_factor`` (1 / std of the latent, unit-variance inputs), area-downsampled to scale k+1's grid
(:meth:`MSKLTokenizer.teacher_forcing_inputs`); :meth:`MSKLTokenizer.next_scale_input` builds the same input scale
by scale in sampling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.tokenizers.kl import KLTokenizer
from genarena.tokenizers.msvq import Phi, area_down, bicubic_up, num_phi_convs, phi_indices


class ContinuousPyramid(nn.Module):
    """The residual pyramid over ``patch_nums`` with ``phi`` convs on the upsampled (all but the last) scales; works
    on latents ``(B, D, H, W)``, ``H = patch_nums[-1]`` (module docstring)."""

    def __init__(self, dim: int, patch_nums: list[int], quant_resi: float, share_quant_resi: int) -> None:
        super().__init__()
        self.patch_nums = tuple(int(p) for p in patch_nums)
        upsampled = len(self.patch_nums) - 1  # every scale but the last gets a phi
        n = num_phi_convs(upsampled, share_quant_resi) if upsampled else 0
        self.phis = nn.ModuleList(Phi(dim, quant_resi) if quant_resi != 0 else nn.Identity() for _ in range(n))
        self.phi_of_scale = phi_indices(upsampled, share_quant_resi) if upsampled else []

    @property
    def side(self) -> int:
        return self.patch_nums[-1]

    def contribution(self, k: int, r: Tensor) -> Tensor:
        """Scale k's part of the latent: ``phi_k(up(r_k))``, and ``r_{K-1}`` itself at the last scale:
        ``(B, D, pn_k, pn_k) -> (B, D, H, W)``."""
        if k == len(self.patch_nums) - 1:
            return r
        return self.phis[self.phi_of_scale[k]](bicubic_up(r, self.side))

    def decompose(self, f: Tensor) -> list[Tensor]:
        """Latent ``f (B, D, H, W)`` -> residuals ``[r_k (B, D, pn_k, pn_k)]``, small to large."""
        f_hat, out = torch.zeros_like(f), []
        for k, pn in enumerate(self.patch_nums):
            r = area_down(f - f_hat, pn)
            f_hat = f_hat + self.contribution(k, r)
            out.append(r)
        return out

    def compose(self, residuals: list[Tensor], upto: int | None = None) -> Tensor:
        """``f_hat = sum_{k < upto} contribution_k`` (all scales by default: the latent), ``(B, D, H, W)``."""
        f_hat = 0
        for k, r in enumerate(residuals[:upto]):
            f_hat = f_hat + self.contribution(k, r)
        return f_hat

    def prefix_loss(self, f: Tensor) -> Tensor:
        """``mean_{k<K-1} mse(f_hat_{<=k}, f)`` for a detached latent ``f``: what trains ``phi`` (0 with one scale)."""
        f_hat, losses = torch.zeros_like(f), []
        for k, pn in enumerate(self.patch_nums[:-1]):
            f_hat = f_hat + self.contribution(k, area_down(f - f_hat, pn))
            losses.append(F.mse_loss(f_hat, f))
        return torch.stack(losses).mean() if losses else f.new_zeros(())


class MSKLTokenizer(KLTokenizer):
    """KL encoder -> posterior mean -> :class:`ContinuousPyramid` -> per-scale standardised tokens; decoding sums the
    scales back into the latent and runs the KL decoder."""

    kind = "multiscale_continuous"

    def __init__(self, image_channels: int, resolution: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                 z_channels: int, kl_weight: float, scale_factor: float | None, patch_nums: list[int],
                 quant_resi: float, share_quant_resi: int, pyramid_weight: float, net: str,
                 ldm: Mapping[str, Any] | None) -> None:
        super().__init__(image_channels, resolution, ch, ch_mult, num_res_blocks, z_channels, kl_weight, scale_factor,
                         net, ldm)
        if int(patch_nums[-1]) != self.grid[0]:
            raise ValueError(f"patch_nums {list(patch_nums)} must end at the latent side {self.grid[0]}")
        self.scales = tuple(int(p) for p in patch_nums)
        self.pyramid = ContinuousPyramid(self.code_dim, list(patch_nums), quant_resi, share_quant_resi)
        self.pyramid_weight = pyramid_weight
        self.register_buffer("scale_stds", torch.ones(len(self.scales)))

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.scales)

    @property
    def block_sizes(self) -> list[int]:
        return [p * p for p in self.scales]

    # ------------------------------------------------------------------ training
    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``kl``'s pass (the decoder sees a posterior sample) plus the pyramid's prefix loss on the detached mean."""
        mu, std = self.posterior(images)
        z = mu + std * torch.randn_like(std)
        kl = 0.5 * (mu.pow(2) + std.pow(2) - 1.0 - 2 * std.log()).sum(1).mean()
        pyramid = self.pyramid.prefix_loss(mu.detach())
        loss = self.kl_weight * kl + self.pyramid_weight * pyramid
        return self.decode_features(z), {"loss": loss, "kl": kl.detach(), "pyramid_loss": pyramid.detach()}

    # ------------------------------------------------------------------ tokens
    def to_scales(self, tokens: Tensor) -> list[Tensor]:
        """Tokens ``(B, L, D)`` -> unscaled residuals ``[r_k (B, D, pn_k, pn_k)]``."""
        b, d = tokens.shape[0], tokens.shape[-1]
        return [(t * s).transpose(1, 2).reshape(b, d, p, p)
                for t, s, p in zip(tokens.split(self.block_sizes, dim=1), self.scale_stds, self.scales)]

    def from_scales(self, residuals: list[Tensor]) -> Tensor:
        """Unscaled residuals ``[r_k (B, D, pn_k, pn_k)]`` -> tokens ``(B, L, D)``."""
        return torch.cat([(r / s).flatten(2).transpose(1, 2) for r, s in zip(residuals, self.scale_stds)], dim=1)

    def split_scales(self, tokens: Tensor) -> list[Tensor]:
        """``(B, L, D)`` -> ``[(B, pn_k^2, D)]``, small to large."""
        return list(tokens.split(self.block_sizes, dim=1))

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.from_scales(self.pyramid.decompose(self.posterior(images)[0]))

    def encode_distribution(self, images: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("mskl tokens are the pyramid of the posterior mean; use encode()")

    def latent(self, tokens: Tensor, upto: int | None = None) -> Tensor:
        """The (unscaled) latent the first ``upto`` scales of ``tokens`` sum to (all: the encoded latent)."""
        return self.pyramid.compose(self.to_scales(tokens), upto)

    def decode(self, tokens: Tensor) -> Tensor:
        return self.decode_features(self.latent(tokens)).clamp(-1, 1)

    @torch.no_grad()
    def decode_progression(self, tokens: Tensor) -> list[Tensor]:
        """Images decoded from the first 1, 2, ..., K scales (coarse to fine), each ``(B, C, H, W)``."""
        return [self.decode_features(self.latent(tokens, k + 1)).clamp(-1, 1) for k in range(len(self.scales))]

    def reconstruction_grids(self, images: Tensor) -> dict[str, list[Tensor]]:
        """The originals, then the reconstruction after each scale (coarse to fine)."""
        return {"reconstruction_per_scale": [images, *self.decode_progression(self.encode(images))]}

    # ------------------------------------------------------------------ a next-scale generator's inputs
    def teacher_forcing_inputs(self, tokens: Tensor) -> Tensor:
        """Inputs of scales 1..K-1: ``(B, sum_{k>0} pn_k^2, D)``; block k-1 is ``scale_factor * area_down(f_hat after
        scale k-1, pn_k)`` in raster order."""
        residuals, f_hat, inputs = self.to_scales(tokens), 0, []
        for k in range(len(self.scales) - 1):
            f_hat = f_hat + self.pyramid.contribution(k, residuals[k])
            inputs.append(area_down(f_hat * self.scale_factor, self.scales[k + 1]).flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    def next_scale_input(self, k: int, f_hat: Tensor | None, tokens_k: Tensor) -> tuple[Tensor, Tensor | None]:
        """One sampling step: add scale k's tokens ``(B, pn_k^2, D)`` to the latent ``f_hat`` and return ``(f_hat,
        input of scale k+1 as (B, pn_{k+1}^2, D))``; the input is None after the last scale."""
        b, pn = tokens_k.shape[0], self.scales[k]
        r = (tokens_k * self.scale_stds[k]).transpose(1, 2).reshape(b, -1, pn, pn)
        h = self.pyramid.contribution(k, r)
        f_hat = h if f_hat is None else f_hat + h
        if k == len(self.scales) - 1:
            return f_hat, None
        return f_hat, area_down(f_hat * self.scale_factor, self.scales[k + 1]).flatten(2).transpose(1, 2)

    # ------------------------------------------------------------------ after training
    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor]) -> dict[str, float]:
        """``kl``'s ``scale_factor = 1 / std`` of the posterior means (unless fixed), and each scale's residual
        standard deviation ``scale_stds`` (the token scale of that scale) over ``batches`` of images."""
        latents = torch.cat([self.posterior(x)[0] for x in batches])  # (N, D, h, w)
        self.set_scale_factor(latents.std().item())
        residuals = self.pyramid.decompose(latents)
        stds = torch.stack([r.std() if r.numel() > 1 else r.new_ones(()) for r in residuals]).clamp_min(1e-8)
        self.scale_stds.copy_(stds)
        return {"scale_factor": float(self.scale_factor),
                **{f"scale_std_s{k}": float(s) for k, s in enumerate(self.scale_stds)}}

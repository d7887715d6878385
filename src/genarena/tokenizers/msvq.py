"""``msvq``: VAR's multi-scale residual quantizer (Tian et al. 2024, Alg. 1 and 2).

With ``f`` the encoder output ``(B, D, H, W)``, ``f_rest = f`` and ``f_hat = 0``, for each scale k,
small to large (``pn_k`` tokens per side):

1. ``r_k = area_down(f_rest, pn_k)``; ``idx_k = nearest code(r_k)``;
2. ``h_k = phi_k(bicubic_up(embed(idx_k), H))`` with ``phi(h) = (1 - r) h + r conv3x3(h)``;
3. ``f_hat += h_k``; ``f_rest -= h_k``.

One codebook serves every scale. ``scale_norm`` (this project's addition; ``none`` is VAR) maps each
scale's residual into codebook space with running statistics of that scale before the lookup, and
maps codes back with the inverse affine map: ``standardize`` per channel, ``whiten`` with the full
covariance (``Sigma_k^{-1/2} (r - mu_k)``). Coarse residuals (image-wide averages, strongly correlated
across channels) and fine ones then share the codebook's region of space, which keeps the coarse
scales from collapsing onto a few codes.
``phi`` has ``n = share_quant_resi`` partially shared convs (``0``: one per scale, ``n = K``); scale k of K
uses the conv whose tick is nearest ``k / (K - 1)``, the ticks being ``linspace(m, 1 - m, n)`` with the
margin ``m = 1/(3n)`` when ``n = 4`` and ``m = 1/(2n)`` otherwise (VAR's ``PhiPartiallyShared``).
``quant_resi = 0`` makes every ``phi`` the identity (no conv).

The generator (``var``) is teacher-forced with the cumulative ``f_hat`` after scale k, area-downsampled
to scale k+1's grid (:meth:`teacher_forcing_inputs`); :meth:`next_scale_input` builds the same input one
scale at a time during sampling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.tokenizers.base import Tokenizer
from genarena.tokenizers.codebook import Codebook

SCALE_NORMS = ("none", "standardize", "whiten")


def area_down(x: Tensor, side: int) -> Tensor:
    """Area-downsample ``(B, D, H, W)`` to ``(B, D, side, side)`` (identity at full size)."""
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="area")


def bicubic_up(x: Tensor, side: int) -> Tensor:
    """Bicubic-upsample ``(B, D, pn, pn)`` to ``(B, D, side, side)`` (identity at full size)."""
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bicubic")


class Phi(nn.Module):
    """``phi(h) = (1 - r) h + r conv3x3(h)``: the residual refinement of an upsampled scale."""

    def __init__(self, dim: int, r: float) -> None:
        super().__init__()
        self.r = r
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return h.mul(1 - self.r) + self.conv(h).mul_(self.r)


def num_phi_convs(num_scales: int, share_quant_resi: int) -> int:
    """How many ``phi`` convs there are: ``share_quant_resi``, or one per scale when it is 0."""
    return share_quant_resi or num_scales


def phi_ticks(num_convs: int) -> np.ndarray:
    """VAR's ticks of ``n = num_convs`` shared convs in ``[0, 1]``: margins ``1/(3n)`` for n = 4, else ``1/(2n)``."""
    margin = 1 / (3 * num_convs) if num_convs == 4 else 1 / (2 * num_convs)
    return np.linspace(margin, 1 - margin, num_convs)


def phi_indices(num_scales: int, share_quant_resi: int) -> list[int]:
    """Which ``phi`` conv each scale uses: scale k's position ``k / (K - 1)`` snaps to the nearest tick
    (the first on a tie). VAR: 10 scales, 4 convs -> [0,0,1,1,1,2,2,3,3,3]."""
    ticks = phi_ticks(num_phi_convs(num_scales, share_quant_resi))
    pos = [k / (num_scales - 1) if num_scales > 1 else 0.0 for k in range(num_scales)]
    return [int(np.argmin(np.abs(ticks - p))) for p in pos]


class MultiScaleResidualQuantizer(nn.Module):
    """The residual loop over scales; works on encoder features ``(B, D, H, W)``."""

    def __init__(self, vocab_size: int, dim: int, patch_nums: list[int], quant_resi: float,
                 share_quant_resi: int, beta: float, l2_norm_codes: bool, entropy_weight: float,
                 entropy_temperature: float, dead_code_threshold: float, usage_decay: float,
                 scale_norm: str) -> None:
        super().__init__()
        self.patch_nums = tuple(int(p) for p in patch_nums)
        self.codebook = Codebook(vocab_size, dim, beta, l2_norm_codes, entropy_weight, entropy_temperature,
                                 dead_code_threshold, usage_decay, usage_groups=len(self.patch_nums))
        n = num_phi_convs(len(self.patch_nums), share_quant_resi)
        self.phis = nn.ModuleList(Phi(dim, quant_resi) if quant_resi != 0 else nn.Identity() for _ in range(n))
        self.phi_of_scale = phi_indices(len(self.patch_nums), share_quant_resi)
        if scale_norm not in SCALE_NORMS:
            raise ValueError(f"scale_norm={scale_norm!r}; choose one of {', '.join(SCALE_NORMS)}")
        self.scale_norm, self.stats_decay = scale_norm, usage_decay
        k = len(self.patch_nums)
        self.register_buffer("res_mean", torch.zeros(k, dim))
        self.register_buffer("res_cov", torch.eye(dim).repeat(k, 1, 1))
        self._affine_cache: dict = {}

    @property
    def side(self) -> int:
        return self.patch_nums[-1]

    @torch.no_grad()
    def update_stats(self, k: int, r: Tensor) -> None:
        """EMA of scale k's residual mean ``(D,)`` and covariance ``(D, D)`` (averaged over DDP ranks)."""
        flat = r.detach().permute(0, 2, 3, 1).reshape(-1, r.shape[1]).float()  # (N, D)
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / max(1, len(flat) - 1)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stats = torch.cat([mean[None], cov])
            torch.distributed.all_reduce(stats)
            stats /= torch.distributed.get_world_size()
            mean, cov = stats[0], stats[1:]
        self.res_mean[k].lerp_(mean, 1 - self.stats_decay)
        if len(flat) > 1:
            self.res_cov[k].lerp_(cov, 1 - self.stats_decay)

    def affine(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu_k (D,), A_k (D, D), A_k^{-1} (D, D))``: codebook space is ``(r - mu_k) A_k^T``.
        Cached outside training (sampling calls it once per scale and step)."""
        key = (k, self.res_cov.device, self.res_cov.dtype)
        if not self.training and key in self._affine_cache:
            return self._affine_cache[key]
        out = self._compute_affine(k)
        if not self.training:
            self._affine_cache[key] = out
        return out

    def train(self, mode: bool = True):
        self._affine_cache.clear()  # statistics may change (training) or be loaded anew
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._affine_cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _compute_affine(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        mean, cov = self.res_mean[k].clone(), self.res_cov[k].clone()  # clones: buffers change in place later
        eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
        if self.scale_norm == "standardize":
            std = cov.diagonal().clamp_min(1e-10).sqrt()
            return mean, torch.diag(1 / std), torch.diag(std)
        evals, evecs = torch.linalg.eigh(cov + 1e-5 * eye)
        evals = evals.clamp_min(1e-10)
        whiten = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
        colour = evecs @ torch.diag(evals.sqrt()) @ evecs.T
        return mean, whiten, colour

    def standardize(self, k: int, r: Tensor) -> Tensor:
        """Scale k's residual ``(B, D, pn, pn)`` in codebook space (see ``scale_norm``)."""
        if self.scale_norm == "none":
            return r
        if self.training:
            self.update_stats(k, r)
        mean, a, _ = self.affine(k)
        x = (r.permute(0, 2, 3, 1) - mean) @ a.T
        return x.permute(0, 3, 1, 2)

    def code_vectors(self, k: int, idx: Tensor) -> Tensor:
        """Indices ``(B, pn, pn)`` -> scale k's code vectors in feature space ``(B, D, pn, pn)``."""
        e = self.codebook.embed(idx)
        if self.scale_norm == "none":
            return e
        mean, _, a_inv = self.affine(k)
        return (e.permute(0, 2, 3, 1) @ a_inv.T + mean).permute(0, 3, 1, 2)

    def scale_contribution(self, k: int, idx: Tensor) -> Tensor:
        """``h_k = phi_k(bicubic_up(embed(idx_k)))``: indices ``(B, pn_k, pn_k)`` -> ``(B, D, H, W)``."""
        return self.phis[self.phi_of_scale[k]](bicubic_up(self.code_vectors(k, idx), self.side))

    def forward(self, f: Tensor) -> tuple[Tensor, list[Tensor], dict[str, Tensor]]:
        """``f (B, D, H, W)`` -> ``(f_hat with straight-through grads, [idx_k (B, pn_k, pn_k)], aux)``.

        VQ loss (VAR): mean over scales of ``beta mse(sg[f_hat_k], f) + mse(f_hat_k, sg[f])``.
        """
        f_nograd = f.detach()
        f_hat = torch.zeros_like(f_nograd)
        indices, vq, entropy, candidates = [], f.new_zeros(()), f.new_zeros(()), []
        beta = self.codebook.beta
        for k, pn in enumerate(self.patch_nums):
            # r_k = area_down(f_rest); written as f - f_hat so the entropy bonus can reach the encoder
            r = self.standardize(k, area_down(f - f_hat.detach(), pn))
            candidates.append(r.detach().permute(0, 2, 3, 1).reshape(-1, r.shape[1]))
            _, idx, ent = self.codebook.quantize(r, group=k)
            f_hat = f_hat + self.scale_contribution(k, idx)
            vq = vq + beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_nograd)
            entropy = entropy + ent
            indices.append(idx)
        k = len(self.patch_nums)
        loss = vq / k + self.codebook.entropy_weight * entropy / k
        f_hat_st = f + (f_hat - f).detach()
        n = min(len(c) for c in candidates)  # dead codes restart from every scale's residuals alike
        restart = torch.cat([c[torch.randperm(len(c), device=c.device)[:n]] for c in candidates])
        return f_hat_st, indices, {"loss": loss, "vq_loss": (vq / k).detach(), "entropy_loss": (entropy / k).detach(),
                                   "restart_candidates": restart}

    @torch.no_grad()
    def lookup_all(self, f: Tensor) -> list[Tensor]:
        """Indices of every scale for features ``f (B, D, H, W)`` (no losses, no usage update)."""
        f_hat, indices = torch.zeros_like(f), []
        for k, pn in enumerate(self.patch_nums):
            idx = self.codebook.lookup(self.standardize(k, area_down(f - f_hat, pn)))
            f_hat = f_hat + self.scale_contribution(k, idx)
            indices.append(idx)
        return indices

    def f_hat_from_indices(self, indices: list[Tensor], upto: int | None = None) -> Tensor:
        """Cumulative ``f_hat`` after scale ``upto - 1`` (all scales by default)."""
        f_hat = 0
        for k, idx in enumerate(indices[:upto]):
            f_hat = f_hat + self.scale_contribution(k, idx)
        return f_hat

    def teacher_forcing_inputs(self, indices: list[Tensor]) -> Tensor:
        """Inputs of scales 1..K-1 for a next-scale generator: ``(B, sum_{k>0} pn_k^2, D)``.

        Row block k-1 is ``area_down(f_hat after scale k-1, pn_k)`` flattened in raster order.
        """
        f_hat, inputs = 0, []
        for k in range(len(self.patch_nums) - 1):
            f_hat = f_hat + self.scale_contribution(k, indices[k])
            inputs.append(area_down(f_hat, self.patch_nums[k + 1]).flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    def next_scale_input(self, k: int, f_hat: Tensor | None, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        """One sampling step: add scale k's indices ``(B, pn_k, pn_k)`` to ``f_hat`` and return
        ``(f_hat, input of scale k+1 as (B, pn_{k+1}^2, D))``; the input is None after the last scale."""
        h = self.scale_contribution(k, idx)
        f_hat = h if f_hat is None else f_hat + h
        if k == len(self.patch_nums) - 1:
            return f_hat, None
        return f_hat, area_down(f_hat, self.patch_nums[k + 1]).flatten(2).transpose(1, 2)


class MSVQTokenizer(Tokenizer):
    """Encoder -> :class:`MultiScaleResidualQuantizer` -> decoder; tokens are all scales concatenated."""

    kind = "multiscale"

    def __init__(self, image_channels: int, resolution: int, ch: int, ch_mult: list[int], num_res_blocks: int,
                 z_channels: int, vocab_size: int, beta: float, l2_norm_codes: bool, entropy_weight: float,
                 entropy_temperature: float, dead_code_threshold: float, usage_decay: float,
                 patch_nums: list[int], quant_resi: float, share_quant_resi: int, scale_norm: str,
                 net: str, ldm: Mapping[str, Any] | None) -> None:
        super().__init__(image_channels, resolution, ch, ch_mult, num_res_blocks, z_channels, net=net, ldm=ldm)
        if int(patch_nums[-1]) != self.grid[0]:
            raise ValueError(f"patch_nums {list(patch_nums)} must end at the latent side {self.grid[0]}")
        self.vocab_size = vocab_size
        self.token_dim = self.code_dim  # the dimension of VAR's teacher-forcing inputs
        self.scales = tuple(int(p) for p in patch_nums)
        self.quantizer = MultiScaleResidualQuantizer(
            vocab_size, self.code_dim, patch_nums, quant_resi, share_quant_resi, beta, l2_norm_codes,
            entropy_weight, entropy_temperature, dead_code_threshold, usage_decay, scale_norm)

    @property
    def seq_len(self) -> int:
        return sum(p * p for p in self.scales)

    def split_scales(self, tokens: Tensor) -> list[Tensor]:
        """``(B, L)`` concatenated indices -> ``[(B, pn_k, pn_k)]``."""
        sizes = [p * p for p in self.scales]
        return [t.reshape(-1, p, p) for t, p in zip(tokens.split(sizes, dim=1), self.scales)]

    @staticmethod
    def join_scales(indices: list[Tensor]) -> Tensor:
        return torch.cat([i.flatten(1) for i in indices], dim=1)

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        f = self.encode_features(images)
        f_hat, indices, aux = self.quantizer(f)
        aux["indices"] = self.join_scales(indices)
        return self.decode_features(f_hat), aux

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        return self.join_scales(self.quantizer.lookup_all(self.encode_features(images)))

    def decode(self, tokens: Tensor) -> Tensor:
        return self.decode_f_hat(self.quantizer.f_hat_from_indices(self.split_scales(tokens)))

    def decode_f_hat(self, f_hat: Tensor) -> Tensor:
        return self.decode_features(f_hat).clamp(-1, 1)

    @torch.no_grad()
    def decode_progression(self, tokens: Tensor) -> list[Tensor]:
        """Images decoded from the first 1, 2, ..., K scales (coarse-to-fine), each ``(B, C, H, W)``."""
        indices = self.split_scales(tokens)
        return [self.decode_f_hat(self.quantizer.f_hat_from_indices(indices, k + 1)) for k in range(len(indices))]

    def trained_codebook(self) -> Codebook:
        return self.quantizer.codebook

    def usage_groups(self, tokens: Tensor) -> list[Tensor]:
        """One group per scale (the codebook tracks usage per scale)."""
        return self.split_scales(tokens)

    def reconstruction_grids(self, images: Tensor) -> dict[str, list[Tensor]]:
        """The originals, then the reconstruction after each scale (coarse to fine)."""
        return {"reconstruction_per_scale": [images, *self.decode_progression(self.encode(images))]}

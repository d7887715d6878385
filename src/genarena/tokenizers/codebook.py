"""The codebook shared by ``vq`` and ``msvq``: nearest-code lookup, VQ losses, usage and restarts.

- Lookup: squared Euclidean distance ``||z||^2 - 2 z.e + ||e||^2`` (or cosine on the unit sphere
  when ``l2_norm`` is set, as in ViT-VQGAN / LlamaGen).
- Loss (VQ-VAE, van den Oord et al. 2017): ``||sg[z] - e||^2 + beta ||z - sg[e]||^2``.
- Entropy bonus (MaskGIT / MAGVIT): ``mean_i H(p_i) - H(mean_i p_i)`` with ``p_i = softmax(-d_i / tau)``
  on scale-normalised distances; minimising it makes each assignment confident and the batch use
  every code.
- Dead codes: an EMA of each code's share of assignments (1.0 = uniform use) is kept per *group*
  (one group for ``vq``, one per scale for ``msvq``); a code whose usage is below the threshold in
  every group is re-initialised from a random encoder output of the current batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class Codebook(nn.Module):
    def __init__(self, vocab_size: int, dim: int, beta: float, l2_norm: bool, entropy_weight: float,
                 entropy_temperature: float, dead_code_threshold: float, usage_decay: float,
                 usage_groups: int = 1) -> None:
        super().__init__()
        self.vocab_size, self.dim, self.beta, self.l2_norm = vocab_size, dim, beta, l2_norm
        self.entropy_weight, self.entropy_temperature = entropy_weight, entropy_temperature
        self.dead_code_threshold, self.usage_decay = dead_code_threshold, usage_decay
        self.embedding = nn.Embedding(vocab_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / vocab_size, 1.0 / vocab_size)
        self.register_buffer("usage", torch.ones(usage_groups, vocab_size))

    @property
    def weight(self) -> Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def distances(self, z: Tensor) -> Tensor:
        """``z (N, D)`` -> squared distances ``(N, V)`` to every code."""
        w = self.weight
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
            return 2 - 2 * z @ w.t()
        return z.pow(2).sum(-1, keepdim=True) - 2 * z @ w.t() + w.pow(2).sum(-1)[None]

    def lookup(self, z: Tensor) -> Tensor:
        """Nearest code indices for channel-first features ``(B, D, h, w)`` -> ``(B, h, w)``."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        return self.distances(flat).argmin(-1).view(b, h, w)

    def embed(self, idx: Tensor) -> Tensor:
        """Indices ``(B, h, w)`` -> channel-first code vectors ``(B, D, h, w)``."""
        return F.embedding(idx, self.weight).permute(0, 3, 1, 2)

    def quantize(self, z: Tensor, group: int = 0) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``z (B, D, h, w)``; returns ``(codes (B, D, h, w), idx (B, h, w), entropy_loss)``.

        Codes carry gradients to the codebook only (no straight-through here); usage of ``group``
        is updated in training mode.
        """
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist_ = self.distances(flat.detach() if self.entropy_weight == 0 else flat)
        idx = dist_.argmin(-1)
        entropy = self.entropy_loss(dist_) if self.entropy_weight > 0 and self.training else z.new_zeros(())
        if self.training:
            self.update_usage(idx, group)
        idx = idx.view(b, h, w)
        return self.embed(idx), idx, entropy

    def entropy_loss(self, distances: Tensor) -> Tensor:
        """``mean_i H(p_i) - H(mean_i p_i)``, ``p_i = softmax(-d_i / (tau mean(d)))``: distances are divided
        by their batch mean so the bonus does not reward inflating the features to sharpen assignments."""
        distances = distances / distances.detach().mean().clamp_min(1e-8)
        logp = F.log_softmax(-distances / self.entropy_temperature, dim=-1)
        p = logp.exp()
        per_sample = -(p * logp).sum(-1).mean()
        mean_p = p.mean(0)
        batch = -(mean_p * torch.log(mean_p + 1e-8)).sum()
        return per_sample - batch

    def vq_loss(self, quantized: Tensor, z: Tensor) -> Tensor:
        """Codebook + commitment loss: ``||sg[z] - e||^2 + beta ||z - sg[e]||^2``."""
        if self.l2_norm:
            z = F.normalize(z, dim=1)
        return F.mse_loss(quantized, z.detach()) + self.beta * F.mse_loss(quantized.detach(), z)

    @torch.no_grad()
    def update_usage(self, idx: Tensor, group: int) -> None:
        counts = torch.bincount(idx.flatten(), minlength=self.vocab_size).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        share = counts * (self.vocab_size / counts.sum().clamp_min(1))
        self.usage[group].mul_(self.usage_decay).add_(share, alpha=1 - self.usage_decay)

    @torch.no_grad()
    def restart_dead_codes(self, candidates: Tensor) -> int:
        """Re-initialise codes unused in every group from rows of ``candidates (N, D)``; returns how many.

        Under DDP the new codebook is broadcast from rank 0 so that every replica stays identical.
        """
        dead = (self.usage < self.dead_code_threshold).all(0).nonzero().flatten()
        n = len(dead)
        if n:
            pick = torch.randint(0, len(candidates), (n,), device=candidates.device)
            noise = 0.01 * candidates.std() * torch.randn(n, self.dim, device=candidates.device)
            self.embedding.weight.data[dead] = candidates[pick] + noise
            self.usage[:, dead] = 1.0
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(self.embedding.weight.data, src=0)
            dist.broadcast(self.usage, src=0)
        return n

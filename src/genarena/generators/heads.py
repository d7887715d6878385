"""The per-token output heads, one axis of the order x head matrix: the same two modules serve every order.

The backbone of an order (raster, masked, next-scale) gives one feature ``h_i (C,)`` per predicted token; the
head turns it into a loss against the token and into a drawn token:

- ``ce`` (:class:`CEHead`), for index tokens (``discrete`` and ``multiscale`` tokenizers): a final AdaLN (scale and
  shift from the class embedding) and a linear map to ``V`` logits, ``logits_i = W (LN(h_i) (1 + s) + b)``; its
  orders train it with cross-entropy and sample the guided logits with temperature / top-k / top-p. Used by
  ``var``, ``ar`` and ``maskgit``.
- ``diffusion`` (:class:`DiffusionHead`), for vector tokens (``continuous`` and ``multiscale_continuous``
  tokenizers): MAR's per-token denoiser ``eps_theta(x_t | t, z_i)`` (Li et al. 2024, Eq. 1-2,
  :mod:`genarena.generators.diffusion`), trained with the noise-prediction loss and sampled by the reverse DDPM
  chain with guidance on eps. Used by ``mar`` (both orders) and ``var_diffusion``.

A head that does not fit the tokens (CE on vectors, diffusion on indices) is an error
(:func:`genarena.generators.base.check_tokenizer_kind`).
``generator.head`` names the head in every generator config; :mod:`genarena.generators.cells` turns
``generator=<order> generator.head=<head>`` into the paradigm of that cell.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from genarena.generators.diffusion import DiffusionLoss

HEADS = ("ce", "diffusion")
# the token kinds (Tokenizer.kind) each head can model
HEAD_TOKENS: dict[str, tuple[str, ...]] = {"ce": ("discrete", "multiscale"),
                                           "diffusion": ("continuous", "multiscale_continuous")}


class AdaLNNorm(nn.Module):
    """The final norm of a head: ``LN(x) (1 + scale) + shift`` with ``(scale, shift)`` from the class embedding;
    zero-initialised modulation. ``(B, L, C), (B, C) -> (B, L, C)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.norm = nn.LayerNorm(width, eps=1e-6, elementwise_affine=False)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def modulation(self, cond: Tensor) -> Tensor:
        """Scale and shift ``(B, 1, 2, C)`` of class embeddings ``cond (B, C)``."""
        return self.ada(cond).view(-1, 1, 2, self.width)

    def forward(self, x: Tensor, cond: Tensor, mod: Tensor | None = None) -> Tensor:
        """``mod``: :meth:`modulation` of ``cond`` computed beforehand (sampling: once per call)."""
        scale, shift = (self.modulation(cond) if mod is None else mod).unbind(2)  # (B, 1, C) each
        return torch.addcmul(shift, self.norm(x), 1 + scale)


class CEHead(AdaLNNorm):
    """The cross-entropy head: :class:`AdaLNNorm` and a linear projection to ``out_dim`` logits,
    ``(B, L, C), (B, C) -> (B, L, out_dim)`` (state-dict keys ``ada.1.*`` and ``proj.*``)."""

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, cond: Tensor, mod: Tensor | None = None) -> Tensor:
        return self.proj(super().forward(x, cond, mod))


class DiffusionHead(DiffusionLoss):
    """The diffusion head: MAR's per-token denoising MLP and its DDPM sampler (:class:`DiffusionLoss`, whose
    state-dict keys ``net.*`` it keeps). ``head(x0 (N, D), z (N, C))`` is the loss of tokens ``x0`` under conditions
    ``z``; ``head.sample(z, steps=, temperature=, cfg=)`` draws tokens ``(N, D)``."""

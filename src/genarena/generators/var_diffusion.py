"""``var_diffusion``: next-scale prediction (VAR's order) with MAR's per-token diffusion head, over ``mskl`` tokens.

The next-scale x diffusion cell of the order x head matrix. The sequence, embeddings, block-causal mask and
KV-cached scale-by-scale decoding are VAR's (:class:`~genarena.generators.var.VAR`, ``L = sum_k pn_k^2``)::

    position block 0   : start token = class embedding                      -> predicts scale 0 (1x1)
    position block k>0 : word_embed(s * area_down(f_hat_{<k}, pn_k))         -> predicts scale k

where ``f_hat_{<k}`` is the latent the scales before k sum to and ``s`` the tokenizer's latent scale
(:meth:`~genarena.tokenizers.mskl.MSKLTokenizer.teacher_forcing_inputs`). The transformer's output at a position,
through a final class-modulated norm, is the condition ``z_i = AdaLN(h_i)`` of the diffusion head
(:class:`~genarena.generators.heads.DiffusionHead`, MAR's denoiser, Li et al. 2024 Eq. 2), which models that
position's continuous token (a scale's residual, ``(D,)``)::

    loss = E_{t, eps} || eps - eps_theta(sqrt(abar_t) x_i + sqrt(1 - abar_t) eps | t, z_i) ||^2   over all L tokens

Sampling decodes one scale per step, all its tokens in parallel, each drawn by the reverse diffusion chain
(``diffusion_steps``); guidance acts on eps, ``eps = eps_c + w_k (eps_c - eps_u)``, with VAR's ramp
``w_k = cfg k / (K - 1)`` under ``cfg_schedule=linear``. Tokens ``(B, L, D)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from genarena.generators.base import Generator
from genarena.generators.heads import AdaLNNorm, DiffusionHead
from genarena.generators.sampling import guidance_weight, require_sampling
from genarena.generators.var import VAR, scale_known


class VARDiffusion(VAR):
    """VAR's order with the diffusion head (module docstring). ``init`` must be ``shared`` (VAR's ``official`` init
    is its CE head's). The coarse-to-fine grids, sampling steps (one per scale) and embeddings are VAR's."""

    name = "var_diffusion"
    requires = "multiscale_continuous"
    order = "next-scale"
    head_kind = "diffusion"

    def __init__(self, tokenizer, num_classes: int, k_bias: bool, init: str, diffusion_width: int | None,
                 diffusion_depth: int, diffusion_timesteps: int, diffusion_batch_mul: int, noise_schedule: str,
                 diffusion_loss: str, **backbone: Any) -> None:
        Generator.__init__(self, tokenizer, num_classes, **backbone)  # VAR's own __init__ builds its CE head
        if init != "shared":
            raise ValueError(f"init={init!r}; var_diffusion has the shared init only (init=official is VAR's, for "
                             "its CE head)")
        c = self.width
        self.token_dim = tokenizer.token_dim
        self.build_sequence(tokenizer)
        self.transformer = self.make_transformer(k_bias=k_bias)
        self.head_norm = AdaLNNorm(c)
        self.head = DiffusionHead(self.token_dim, c, diffusion_width or c, diffusion_depth, diffusion_timesteps,
                                  diffusion_batch_mul, noise_schedule, diffusion_loss)
        self.finish_init()  # VAR's init for the transformer side; the head inits itself below
        self.head.init_weights("genarena")
        self.init_positions()

    def forward(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Teacher-forced conditions ``z (B, L, C)`` of the diffusion head for tokens ``(B, L, D)``."""
        cond = self.condition(labels)
        inputs = self.word_embed(self.tokenizer.teacher_forcing_inputs(tokens))  # (B, L - pn0^2, C)
        start = cond[:, None] + self.start_pos  # (B, pn0^2, C)
        x = self._embed(torch.cat([start.expand(-1, self.block_sizes[0], -1), inputs], dim=1), 0)
        h = self.transformer(x, cond, mask=self.mask)  # (B, L, C)
        return self.head_norm(h, cond)

    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        z = self(tokens, labels)
        out = self.head(tokens.flatten(0, 1), z.flatten(0, 1), per_token=True)
        per_token = out.pop("mse_per_token").view(tokens.shape[:2])  # (B, L)
        per_scale = torch.stack([m.mean() for m in per_token.split(self.block_sizes, dim=1)])
        out.update({"mse_last": per_scale[-1], "mse_scale_mean": per_scale.mean()})
        for k, m in enumerate(per_scale):
            out[f"mse_s{k}"] = m
        return out

    # ------------------------------------------------------------------ incremental decoding
    def _decode(self, labels: Tensor, cfg: float, cfg_schedule: str,
                choose: Callable[[int, Tensor, float | None], Tensor]) -> Tensor:
        """Scale-by-scale decoding with a KV cache (VAR's). ``choose(k, z (B' , pn^2, C), w)`` returns the tokens of
        scale k ``(B, pn^2, D)``: ``z`` holds ``[cond; uncond]`` (``B' = 2B``) when guided, and ``w`` is the guidance
        weight (None unguided). Returns the tokens ``(B, L, D)``."""
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        x = cond[:, None] + self.start_pos
        f_hat, offset, chosen = None, 0, []
        self.transformer.start_cache()
        try:
            for k, pn in enumerate(self.scales):
                z = self.head_norm(self.transformer(self._embed(x, offset), cond), cond)  # (B', pn^2, C)
                w = guidance_weight(cfg, cfg_schedule, k / max(1, len(self.scales) - 1)) if doubled else None
                tokens_k = choose(k, z, w)  # (B, pn^2, D)
                chosen.append(tokens_k)
                offset += pn * pn
                f_hat, nxt = self.tokenizer.next_scale_input(k, f_hat, tokens_k)
                if nxt is not None:
                    x = self.word_embed(torch.cat([nxt, nxt]) if doubled else nxt)
        finally:
            self.transformer.stop_cache()
        return torch.cat(chosen, dim=1)

    def _draw(self, z: Tensor, w: float | None, diffusion_steps: int, temperature: float,
              generator: torch.Generator | None) -> Tensor:
        """Tokens ``(B, n, D)`` drawn by the diffusion head for conditions ``z (B' , n, C)`` (``[cond; uncond]`` when
        ``w`` is not None)."""
        b = z.shape[0] // 2 if w is not None else z.shape[0]
        flat = torch.cat([z[:b].flatten(0, 1), z[b:].flatten(0, 1)]) if w is not None else z.flatten(0, 1)
        drawn = self.head.sample(flat, steps=diffusion_steps, temperature=temperature, cfg=w, generator=generator)
        return drawn.view(b, -1, self.token_dim)

    @torch.no_grad()
    def incremental_conditions(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Conditions ``z (B, L, C)`` of the KV-cached decoder fed the given ``tokens`` (no guidance); equal to the
        teacher-forced :meth:`forward`."""
        got, given = [], tokens.split(self.block_sizes, dim=1)

        def choose(k, z, w):
            got.append(z)
            return given[k]

        self._decode(labels, 0.0, "constant", choose)
        return torch.cat(got, dim=1)

    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int, top_p: float,
               diffusion_steps: int, generator: torch.Generator | None = None, **_: Any) -> Tensor:
        """Tokens ``(B, L, D)``; ``temperature`` scales the reverse chain's noise, ``top_k`` / ``top_p`` do not apply
        to continuous tokens and are ignored."""
        return self._decode(labels, cfg, cfg_schedule,
                            lambda k, z, w: self._draw(z, w, diffusion_steps, temperature, generator))

    @torch.no_grad()
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, diffusion_steps: int,
                 generator: torch.Generator | None = None, **_: Any) -> Tensor:
        """In-/out-painting as VAR's: at every scale the known part of that scale's tokens is the input's
        (``tokens``, the tokenizer's encoding of the image) and the rest is drawn, so each next scale is predicted from
        a latent whose known region is the input's. ``known (B, h, w)`` is over the last scale; VAR's
        :func:`~genarena.generators.var.scale_known` maps it to each scale. Returns ``(B, L, D)``; kept tokens equal
        ``tokens``."""
        self.check_known(tokens, known, labels)
        given = tokens.split(self.block_sizes, dim=1)
        keep = [scale_known(known.to(tokens.device), pn).flatten(1)[..., None] for pn in self.scales]  # (B, pn^2, 1)

        def choose(k, z, w):
            return torch.where(keep[k], given[k], self._draw(z, w, diffusion_steps, temperature, generator))

        return self._decode(labels, cfg, cfg_schedule, choose)

    # ------------------------------------------------------------------ cost
    def flops_per_image(self, train: bool, *, cfg: float | None = None, diffusion_steps: int | None = None,
                        **_: Any) -> float:
        """Training, or sampling (needs ``cfg`` and ``diffusion_steps``): the transformer as VAR's, the head's norm,
        the diffusion head per token, and the tokenizer's phi convs that build the inputs."""
        c, d, L = self.width, self.token_dim, self.seq_len
        side = self.scales[-1]
        embed = 2 * (L - self.block_sizes[0]) * d * c
        norm = 2 * c * 2 * c  # the head norm's AdaLN, once per sequence
        phi = (len(self.scales) - 1) * 2 * 9 * d * d * side * side  # the upsampled scales' phi convs
        if train:
            return 3 * (self.transformer.flops(L) + embed + norm) + phi + L * self.head.train_flops_per_token()
        require_sampling(cfg=cfg, diffusion_steps=diffusion_steps)
        attn_total, seen = 0.0, 0
        for n in self.block_sizes:
            seen += n
            attn_total += self.transformer.flops(n, seen)
        mult = 2 if cfg else 1
        return mult * (attn_total + embed + len(self.scales) * norm) + phi + \
            L * self.head.sample_flops_per_token(diffusion_steps, bool(cfg))

"""``mar``: masked autoregression over continuous tokens with a diffusion loss (Li et al. 2024).

``order=random`` (MAR): an MAE-style encoder/decoder. Per batch a mask ratio is drawn from a
truncated normal (mean 1, std 0.25, at least ``mask_ratio_min``); per image a random order decides
which tokens are masked. The encoder sees ``[class buffer, unmasked tokens]``; the decoder fills the
masked positions with a learned [MASK] embedding and outputs a condition ``z_i (C,)`` per token; the
:class:`DiffusionLoss` is applied on the masked tokens. Sampling runs K steps; after step t,
``floor(L cos(pi/2 (t+1)/K))`` tokens stay masked (the next ones in the random order are revealed),
each revealed token drawn by the reverse DDPM chain; guidance ramps with the revealed fraction.

``order=raster`` (the paper's causal baseline): the same two stacks under a causal mask over
``[class buffer, x_0 .. x_{L-2}]``; position ``b - 1 + i`` gives ``z_i``; one token per step with a KV
cache at sampling. Tokens ``(B, L, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from genarena.generators.backbone import causal_mask
from genarena.generators.base import Generator
from genarena.generators.diffusion import DiffusionLoss
from genarena.generators.sampling import cosine_mask_schedule, guidance_weight

MASK_RATIO_STD = 0.25


def truncnorm_mean(low: float, mean: float = 1.0, std: float = MASK_RATIO_STD) -> float:
    """Mean of N(mean, std) truncated to [low, mean]."""
    a = (low - mean) / std
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    return mean + std * (phi(a) - phi(0.0)) / (cdf(0.0) - cdf(a))


class MAR(Generator):
    name = "mar"
    requires = "continuous"

    def __init__(self, tokenizer, num_classes: int, order: str, encoder_depth: int | None,
                 decoder_depth: int | None, buffer_size: int, mask_ratio_min: float, diffusion_width: int | None,
                 diffusion_depth: int, diffusion_timesteps: int, diffusion_batch_mul: int, noise_schedule: str,
                 **backbone) -> None:
        super().__init__(tokenizer, num_classes, **backbone)
        if order not in ("random", "raster"):
            raise ValueError(f"order={order!r}; choose random or raster")
        self.order, self.buffer_size, self.mask_ratio_min = order, buffer_size, mask_ratio_min
        self.seq_len, self.token_dim = tokenizer.seq_len, tokenizer.token_dim
        c, b, n = self.width, buffer_size, tokenizer.seq_len
        self.encoder_depth = encoder_depth or math.ceil(self.depth / 2)
        self.decoder_depth = decoder_depth or max(1, self.depth // 2)
        total = b + n if order == "random" else b + n - 1
        self.z_proj = nn.Linear(self.token_dim, c)
        self.z_proj_ln = nn.LayerNorm(c, eps=1e-6)
        self.enc_pos_embed = nn.Parameter(torch.zeros(1, total, c))
        self.encoder = self.make_transformer(self.encoder_depth)
        self.enc_norm = nn.LayerNorm(c, eps=1e-6)
        self.dec_embed = nn.Linear(c, c)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.dec_pos_embed = nn.Parameter(torch.zeros(1, total, c))
        self.decoder = self.make_transformer(self.decoder_depth)
        self.dec_norm = nn.LayerNorm(c, eps=1e-6)
        self.diff_pos_embed = nn.Parameter(torch.zeros(1, n, c))
        denoiser_width = diffusion_width or c  # the denoiser scales with the backbone by default
        self.diffloss = DiffusionLoss(self.token_dim, c, denoiser_width, diffusion_depth, diffusion_timesteps,
                                      diffusion_batch_mul, noise_schedule)
        if order == "raster":
            self.register_buffer("mask", causal_mask(total), persistent=False)
        self.finish_init()
        std = 0.02
        for p in (self.enc_pos_embed, self.dec_pos_embed, self.diff_pos_embed, self.mask_embed):
            nn.init.normal_(p, std=std)
        # the denoiser keeps its own zero-initialised AdaLN / output layers
        for m in self.diffloss.net.modules():
            if hasattr(m, "ada"):
                nn.init.zeros_(m.ada[1].weight)
                nn.init.zeros_(m.ada[1].bias)
        for m in (self.diffloss.net.final_ada[1], self.diffloss.net.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ masking
    def draw_mask_ratio(self) -> float:
        """One mask ratio per batch from N(1, 0.25) truncated to [mask_ratio_min, 1]."""
        a = torch.special.ndtr(torch.tensor((self.mask_ratio_min - 1.0) / MASK_RATIO_STD))
        u = a + torch.rand(()) * (0.5 - a)
        return float(1.0 + MASK_RATIO_STD * torch.special.ndtri(u))

    def random_orders(self, b: int, device, generator: torch.Generator | None = None) -> Tensor:
        return torch.rand(b, self.seq_len, generator=generator, device=device).argsort(dim=1)

    @staticmethod
    def mask_by_order(n_masked: int, orders: Tensor) -> Tensor:
        """``(B, L)`` mask of the first ``n_masked`` positions of each order."""
        mask = torch.zeros(orders.shape, dtype=torch.bool, device=orders.device)
        return mask.scatter_(1, orders[:, :n_masked], True)

    # ------------------------------------------------------------------ random order (MAR)
    def encode_decode(self, tokens: Tensor, mask: Tensor, cond: Tensor) -> Tensor:
        """Conditions ``z (B, L, C)`` for ``tokens (B, L, D)`` with ``mask (B, L)`` (same count per row)."""
        b_, n, c, buf = tokens.shape[0], self.seq_len, self.width, self.buffer_size
        x = torch.cat([cond[:, None].expand(-1, buf, -1), self.z_proj(tokens)], dim=1)
        x = self.z_proj_ln(x + self.enc_pos_embed)
        keep = torch.cat([torch.ones(b_, buf, dtype=torch.bool, device=x.device), ~mask], dim=1)
        x = self.enc_norm(self.encoder(x[keep].view(b_, -1, c), cond))
        full = self.mask_embed.expand(b_, buf + n, c).clone()
        full[keep] = self.dec_embed(x).reshape(-1, c)
        x = self.dec_norm(self.decoder(full + self.dec_pos_embed, cond))
        return x[:, buf:] + self.diff_pos_embed

    # ------------------------------------------------------------------ raster order (causal)
    def causal_conditions(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """Teacher-forced ``z (B, L, C)`` of the causal variant."""
        buf = self.buffer_size
        x = torch.cat([cond[:, None].expand(-1, buf, -1), self.z_proj(tokens[:, :-1])], dim=1)
        x = self.z_proj_ln(x + self.enc_pos_embed)
        x = self.dec_embed(self.enc_norm(self.encoder(x, cond, mask=self.mask)))
        x = self.dec_norm(self.decoder(x + self.dec_pos_embed, cond, mask=self.mask))
        return x[:, buf - 1:] + self.diff_pos_embed

    def _causal_step(self, x_in: Tensor, start: int, cond: Tensor) -> Tensor:
        """Feed embedded inputs ``(B, n, C)`` at offset ``start`` through both cached stacks; returns the
        decoder output of the last position ``(B, C)``."""
        n = x_in.shape[1]
        x = self.z_proj_ln(x_in + self.enc_pos_embed[:, start:start + n])
        x = self.dec_embed(self.enc_norm(self.encoder(x, cond)))
        return self.dec_norm(self.decoder(x + self.dec_pos_embed[:, start:start + n], cond))[:, -1]

    def _raster_decode(self, labels: Tensor, cfg: float, cfg_schedule: str,
                       draw: Callable[[int, Tensor, float | None], Tensor]) -> Tensor:
        """Token-by-token decoding with KV caches; ``draw(i, z_i (B', C), w)`` returns token i ``(B, D)``."""
        buf, n = self.buffer_size, self.seq_len
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        out = torch.empty(labels.shape[0], n, self.token_dim, device=labels.device)
        self.encoder.start_cache()
        self.decoder.start_cache()
        try:
            x_in = cond[:, None].expand(-1, buf, -1)
            for i in range(n):
                z = self._causal_step(x_in, buf - 1 + i if i else 0, cond) + self.diff_pos_embed[:, i]
                w = guidance_weight(cfg, cfg_schedule, i / n) if doubled else None
                tok = draw(i, z, w)
                out[:, i] = tok
                x_in = self.z_proj(torch.cat([tok, tok]) if doubled else tok)[:, None]
        finally:
            self.encoder.stop_cache()
            self.decoder.stop_cache()
        return out

    @torch.no_grad()
    def incremental_conditions(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Causal variant: the cached decoder's ``z (B, L, C)`` for given tokens (equals the teacher-forced one)."""
        got = []

        def draw(i, z, w):
            got.append(z)
            return tokens[:, i]

        self._raster_decode(labels, 0.0, "constant", draw)
        return torch.stack(got, dim=1)

    # ------------------------------------------------------------------ training
    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        cond = self.condition(labels)
        if self.order == "raster":
            z = self.causal_conditions(tokens, cond)
            return {"loss": self.diffloss(tokens.flatten(0, 1), z.flatten(0, 1))}
        ratio = self.draw_mask_ratio()
        n_masked = max(1, math.ceil(self.seq_len * ratio))
        mask = self.mask_by_order(n_masked, self.random_orders(tokens.shape[0], tokens.device))
        z = self.encode_decode(tokens, mask, cond)
        loss = self.diffloss(tokens[mask], z[mask])
        return {"loss": loss, "mask_ratio": torch.tensor(n_masked / self.seq_len)}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int = 0,
               top_p: float = 0.0, generator: torch.Generator | None = None, steps: int = 16,
               diffusion_steps: int = 100) -> Tensor:
        """``top_k`` / ``top_p`` do not apply to continuous tokens and are ignored."""
        def diffuse(z: Tensor, w: float | None) -> Tensor:
            return self.diffloss.sample(z, diffusion_steps, temperature, w, generator)

        if self.order == "raster":
            return self._raster_decode(labels, cfg, cfg_schedule, lambda i, z, w: diffuse(z, w))
        b, n = labels.shape[0], self.seq_len
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        tokens = torch.zeros(b, n, self.token_dim, device=labels.device)
        mask = torch.ones(b, n, dtype=torch.bool, device=labels.device)
        orders = self.random_orders(b, labels.device, generator)
        for n_after in cosine_mask_schedule(n, steps):
            if not mask.any():
                continue
            tok_in, mask_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if doubled else (tokens, mask)
            z = self.encode_decode(tok_in, mask_in, cond)
            mask_next = self.mask_by_order(n_after, orders)
            to_pred = mask & ~mask_next
            w = guidance_weight(cfg, cfg_schedule, (n - n_after) / n) if doubled else None
            zc = z[:b][to_pred]
            zz = torch.cat([zc, z[b:][to_pred]]) if doubled else zc
            tokens[to_pred] = diffuse(zz, w)
            mask = mask_next
        return tokens

    # ------------------------------------------------------------------ cost
    def sampling_steps(self, steps: int = 16, **sampling) -> int:
        return self.seq_len if self.order == "raster" else min(steps, self.seq_len)

    def flops_per_image(self, train: bool, cfg: float = 0.0, steps: int = 16, diffusion_steps: int = 100,
                        mask_ratio: float | None = None, **sampling) -> float:
        """``mask_ratio`` defaults to the expectation of the truncated normal (training)."""
        c, d, buf, n = self.width, self.token_dim, self.buffer_size, self.seq_len
        enc, dec = self.encoder, self.decoder
        if self.order == "raster":
            s = buf + n - 1
            if train:
                fwd = 2 * (n - 1) * d * c + enc.flops(s) + 2 * s * c * c + dec.flops(s)
                return 3 * fwd + n * self.diffloss.flops_per_token(True)
            fwd = enc.flops(buf) + dec.flops(buf) + 2 * buf * c * c
            for i in range(1, n):
                fwd += enc.flops(1, buf + i) + dec.flops(1, buf + i) + 2 * d * c + 2 * c * c
            return (2 if cfg else 1) * fwd + n * self.diffloss.flops_per_token(False, diffusion_steps, cfg)

        def pass_flops(n_masked: int) -> float:
            kept = buf + n - n_masked
            return 2 * n * d * c + enc.flops(kept) + 2 * kept * c * c + dec.flops(buf + n)

        if train:
            ratio = truncnorm_mean(self.mask_ratio_min) if mask_ratio is None else mask_ratio
            n_masked = max(1, math.ceil(n * ratio))
            return 3 * pass_flops(n_masked) + n_masked * self.diffloss.flops_per_token(True)
        total, masked = 0.0, n
        for n_after in cosine_mask_schedule(n, steps):
            if masked == 0:
                break
            total += pass_flops(masked)
            masked = n_after
        return (2 if cfg else 1) * total + n * self.diffloss.flops_per_token(False, diffusion_steps, cfg)

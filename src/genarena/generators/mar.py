"""``mar``: masked autoregression over continuous tokens with a diffusion loss (Li et al. 2024).

An MAE-style encoder/decoder. Per batch a mask ratio is drawn from a truncated normal (mean 1, std 0.25, at
least ``mask_ratio_min``); per image a random order decides which tokens are masked. The encoder sees
``[class buffer, unmasked tokens]`` (``buffer_size`` copies of the class embedding; the null class is MAR's learned
"fake latent"); the decoder fills the masked positions with a learned [MASK] embedding and outputs a condition
``z_i (C,)`` per token; the diffusion head (:class:`~genarena.generators.heads.DiffusionHead`) is applied on the
masked tokens::

    x = LN(z_proj([buffer; tokens]) + pos_enc)[kept]        ->  h = LN(Encoder(x))
    y = [MASK everywhere; Linear(h) at kept] + pos_dec      ->  z = LN(Decoder(y))[buffer:] + pos_diff

Sampling runs K steps; after step k, ``floor(L cos(pi/2 (k+1)/K))`` tokens stay masked (the next ones in the
random order are revealed), each revealed token drawn by the reverse diffusion chain; guidance ramps with the
revealed fraction, ``w_k = w (L - masked_k) / L`` (MAR: ``cfg_k = 1 + (cfg - 1)(L - masked_k) / L``).

``backbone``: ``shared`` runs both stacks on genarena's AdaLN transformer (class conditioning in every block on
top of the buffer, VAR's init); ``vit`` is MAR's plain ViT (:mod:`genarena.generators.vit`; the class enters only
through the buffer; MAR's init). ``order=raster`` selects the causal variant, :class:`RasterMAR`
(:mod:`genarena.generators.mar_raster`). Tokens ``(B, L, D)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from genarena.generators.backbone import Transformer
from genarena.generators.backbone import init_weights as var_init
from genarena.generators.base import Generator, rows_by_count
from genarena.generators.heads import DiffusionHead
from genarena.generators.sampling import cosine_mask_schedule, guidance_weight
from genarena.generators.vit import ViT

MASK_RATIO_STD = 0.25
BACKBONES = ("shared", "vit")


def truncnorm_mean(low: float, mean: float = 1.0, std: float = MASK_RATIO_STD) -> float:
    """Mean of N(mean, std) truncated to [low, mean]."""
    a = (low - mean) / std
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    return mean + std * (phi(a) - phi(0.0)) / (cdf(0.0) - cdf(a))


class MARBase(Generator):
    """What both orders share: token projection, class buffer, encoder and decoder stacks with their position
    embeddings (``positions`` of them), and the diffusion head."""

    name = "mar"
    requires = "continuous"
    order = "masked"
    head_kind = "diffusion"

    def __init__(self, tokenizer, num_classes: int, positions: int, backbone: str, encoder_depth: int | None,
                 decoder_depth: int | None, buffer_size: int, diffusion_width: int | None, diffusion_depth: int,
                 diffusion_timesteps: int, diffusion_batch_mul: int, noise_schedule: str, diffusion_loss: str,
                 **transformer: Any) -> None:
        super().__init__(tokenizer, num_classes, **transformer)
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r}; choose one of {', '.join(BACKBONES)}")
        self.backbone, self.buffer_size = backbone, buffer_size
        self.seq_len, self.token_dim = tokenizer.seq_len, tokenizer.token_dim
        c, n = self.width, tokenizer.seq_len
        self.encoder_depth = encoder_depth or math.ceil(self.depth / 2)
        self.decoder_depth = decoder_depth or max(1, self.depth // 2)
        self.z_proj = nn.Linear(self.token_dim, c)
        self.z_proj_ln = nn.LayerNorm(c, eps=1e-6)
        self.enc_pos_embed = nn.Parameter(torch.zeros(1, positions, c))
        self.encoder = self.make_stack(self.encoder_depth)
        self.enc_norm = nn.LayerNorm(c, eps=1e-6)
        self.dec_embed = nn.Linear(c, c)
        self.mask_embed = nn.Parameter(torch.zeros(1, 1, c))
        self.dec_pos_embed = nn.Parameter(torch.zeros(1, positions, c))
        self.decoder = self.make_stack(self.decoder_depth)
        self.dec_norm = nn.LayerNorm(c, eps=1e-6)
        self.diff_pos_embed = nn.Parameter(torch.zeros(1, n, c))
        denoiser_width = diffusion_width or c  # the denoiser scales with the backbone by default
        self.diffloss = DiffusionHead(self.token_dim, c, denoiser_width, diffusion_depth, diffusion_timesteps,
                                      diffusion_batch_mul, noise_schedule, diffusion_loss)
        self.init_weights()

    def make_stack(self, depth: int) -> Transformer | ViT:
        if self.backbone == "vit":
            return ViT(depth, self.width, self.heads, self.mlp_ratio, self.qk_norm, self.dropout, self.drop_path)
        return self.make_transformer(depth)

    def init_weights(self) -> None:
        """``shared``: VAR's init for the transformer parts; ``vit``: MAR's (Xavier-uniform linears, unit
        LayerNorms, N(0, 0.02) embeddings). The diffusion head inits itself in the same style."""
        transformer_parts = [m for name, m in self.named_children() if name != "diffloss"]
        if self.backbone == "shared":
            for part in transformer_parts:
                var_init(part, self.width, self.depth)
        else:
            nn.init.normal_(self.class_embed.weight, std=0.02)  # its last row is MAR's fake latent
            for part in transformer_parts:
                for m in part.modules():
                    if isinstance(m, nn.Linear):
                        nn.init.xavier_uniform_(m.weight)
                        nn.init.zeros_(m.bias)
                    elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                        nn.init.ones_(m.weight)
                        nn.init.zeros_(m.bias)
        self.diffloss.init_weights("genarena" if self.backbone == "shared" else "mar")
        for p in (self.enc_pos_embed, self.dec_pos_embed, self.diff_pos_embed, self.mask_embed):
            nn.init.normal_(p, std=0.02)

    def embed_inputs(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """``LN(z_proj([buffer; tokens]) + pos_enc)``: tokens ``(B, n, D)``, classes ``(B, C)`` -> ``(B, b + n, C)``."""
        x = torch.cat([cond[:, None].expand(-1, self.buffer_size, -1), self.z_proj(tokens)], dim=1)
        return self.z_proj_ln(x + self.enc_pos_embed[:, : x.shape[1]])

    def conditioned_sample(self, labels: Tensor, cfg: float) -> tuple[Tensor, bool]:
        """Class embeddings ``(B or 2B, C)`` for sampling: ``[labels; null]`` when guided."""
        all_labels, doubled = self.guidance_labels(labels, cfg)
        return self.class_embed(all_labels), doubled


class MAR(MARBase):
    """Random-order MAR (module docstring)."""

    def __init__(self, tokenizer, num_classes: int, mask_ratio_min: float, buffer_size: int, **kwargs: Any) -> None:
        super().__init__(tokenizer, num_classes, positions=buffer_size + tokenizer.seq_len, buffer_size=buffer_size,
                         **kwargs)
        self.mask_ratio_min = mask_ratio_min

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

    # ------------------------------------------------------------------ encoder / decoder
    def encode(self, tokens: Tensor, mask: Tensor, cond: Tensor) -> Tensor:
        """Encoder output ``(B, b + kept, C)`` for ``tokens (B, L, D)`` with ``mask (B, L)`` (same count per row)."""
        b_, buf = tokens.shape[0], self.buffer_size
        x = self.embed_inputs(tokens, cond)  # (B, b + L, C)
        keep = torch.cat([torch.ones(b_, buf, dtype=torch.bool, device=x.device), ~mask], dim=1)
        return self.enc_norm(self.encoder(x[keep].view(b_, -1, self.width), cond))  # (B, b + kept, C)

    def decode(self, h: Tensor, mask: Tensor, cond: Tensor) -> Tensor:
        """Conditions ``z (B, L, C)`` from the encoder output ``h (B, b + kept, C)``."""
        b_, n, c, buf = h.shape[0], self.seq_len, self.width, self.buffer_size
        keep = torch.cat([torch.ones(b_, buf, dtype=torch.bool, device=h.device), ~mask], dim=1)
        full = self.mask_embed.expand(b_, buf + n, c).clone()
        full[keep] = self.dec_embed(h).reshape(-1, c)  # (B, b + L, C)
        x = self.dec_norm(self.decoder(full + self.dec_pos_embed, cond))
        return x[:, buf:] + self.diff_pos_embed  # (B, L, C)

    def encode_decode(self, tokens: Tensor, mask: Tensor, cond: Tensor) -> Tensor:
        """Conditions ``z (B, L, C)`` for ``tokens (B, L, D)`` with ``mask (B, L)`` (same count per row)."""
        return self.decode(self.encode(tokens, mask, cond), mask, cond)

    # ------------------------------------------------------------------ training
    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        cond = self.condition(labels)
        ratio = self.draw_mask_ratio()
        n_masked = max(1, math.ceil(self.seq_len * ratio))
        mask = self.mask_by_order(n_masked, self.random_orders(tokens.shape[0], tokens.device))
        z = self.encode_decode(tokens, mask, cond)
        return {**self.diffloss(tokens[mask], z[mask]), "mask_ratio": torch.tensor(n_masked / self.seq_len)}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int, top_p: float,
               steps: int, diffusion_steps: int, sampler: str = "ddpm", eta: float = 0.0,
               generator: torch.Generator | None = None, orders: Tensor | None = None,
               noise: Iterator[Tensor] | None = None) -> Tensor:
        """Tokens ``(B, L, D)``. ``top_k`` / ``top_p`` do not apply to continuous tokens and are ignored.
        ``sampler`` / ``eta``: the diffusion sampler (:meth:`DiffusionLoss.sample`; the defaults, the paper's
        DDPM, serve checkpoints written before these options existed). ``orders (B, L)`` fixes the decoding order
        and ``noise`` replays recorded diffusion noise; by default both are drawn from ``generator``."""
        b, n = labels.shape[0], self.seq_len
        tokens = torch.zeros(b, n, self.token_dim, device=labels.device)
        mask = torch.ones(b, n, dtype=torch.bool, device=labels.device)
        orders = self.random_orders(b, labels.device, generator) if orders is None else orders
        return self.reveal(tokens, mask, orders, n, labels, cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature,
                           steps=steps, diffusion_steps=diffusion_steps, sampler=sampler, eta=eta, generator=generator,
                           noise=noise)

    def reveal(self, tokens: Tensor, mask: Tensor, orders: Tensor, count: int, labels: Tensor, *, cfg: float,
               cfg_schedule: str, temperature: float, steps: int, diffusion_steps: int, sampler: str, eta: float,
               generator: torch.Generator | None, noise: Iterator[Tensor] | None = None) -> Tensor:
        """The masked decoding loop shared by :meth:`sample` and :meth:`complete`: ``count`` masked positions of
        ``tokens (B, L, D)`` (``mask (B, L)`` True = masked) are revealed in ``orders (B, L)`` by the cosine schedule
        over ``count``, each drawn by the diffusion head given the encoder-decoder's ``z``; guidance ramps with the
        revealed fraction of all ``L`` tokens. Fills ``tokens`` in place and returns it."""
        b, n = tokens.shape[:2]
        cond, doubled = self.conditioned_sample(labels, cfg)
        for n_after in cosine_mask_schedule(count, steps) if count else []:
            if not mask.any():
                continue
            tok_in, mask_in = (torch.cat([tokens, tokens]), torch.cat([mask, mask])) if doubled else (tokens, mask)
            z = self.encode_decode(tok_in, mask_in, cond)  # (B or 2B, L, C)
            mask_next = self.mask_by_order(n_after, orders)
            to_pred = mask & ~mask_next
            w = guidance_weight(cfg, cfg_schedule, (n - n_after) / n) if doubled else None
            zc = z[:b][to_pred]
            zz = torch.cat([zc, z[b:][to_pred]]) if doubled else zc
            tokens[to_pred] = self.diffloss.sample(zz, steps=diffusion_steps, temperature=temperature, cfg=w,
                                                   sampler=sampler, eta=eta, generator=generator, noise=noise)
            mask = mask_next
        return tokens

    @torch.no_grad()
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, steps: int, diffusion_steps: int,
                 sampler: str = "ddpm", eta: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
        """Masked decoding that starts with the known tokens revealed (the encoder sees them from the first step)
        and the unknown ones masked, revealed in a random order by the cosine schedule over the ``U`` unknown
        tokens; guidance ramps with the revealed fraction of all ``L`` tokens, known ones included. Rows with
        different ``U`` run as separate groups (the encoder keeps the same count per row). Tokens ``(B, L, D)``;
        known tokens equal ``tokens``."""
        keep = self.check_known(tokens, known, labels)
        options = dict(cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p,
                       steps=steps, diffusion_steps=diffusion_steps, sampler=sampler, eta=eta, generator=generator)
        groups = rows_by_count(~keep)
        if len(groups) > 1:
            out = tokens.clone()
            for rows in groups:
                out[rows] = self.complete(tokens[rows], known[rows], labels[rows], **options)
            return out
        b, n = tokens.shape[:2]
        out = tokens.masked_fill(~keep[..., None], 0.0)
        # a random order of the unknown positions first (known ones sort last and are never reached)
        orders = (torch.rand(b, n, generator=generator, device=tokens.device) + keep.float()).argsort(dim=1)
        return self.reveal(out, ~keep, orders, int((~keep[0]).sum()), labels, cfg=cfg, cfg_schedule=cfg_schedule,
                           temperature=temperature, steps=steps, diffusion_steps=diffusion_steps, sampler=sampler,
                           eta=eta, generator=generator)

    # ------------------------------------------------------------------ cost
    def sampling_steps(self, *, steps: int, **_: Any) -> int:
        return min(steps, self.seq_len)

    def pass_flops(self, n_masked: int) -> float:
        """Forward FLOPs of one encoder/decoder pass with ``n_masked`` of ``L`` tokens masked."""
        c, d, buf, n = self.width, self.token_dim, self.buffer_size, self.seq_len
        kept = buf + n - n_masked
        return 2 * n * d * c + self.encoder.flops(kept) + 2 * kept * c * c + self.decoder.flops(buf + n)

    def flops_per_image(self, train: bool, *, cfg: float | None = None, steps: int | None = None,
                        diffusion_steps: int | None = None, mask_ratio: float | None = None, **_: Any) -> float:
        """Training (``mask_ratio`` defaults to the truncated normal's mean) or sampling (needs ``cfg``,
        ``steps`` and ``diffusion_steps``)."""
        n = self.seq_len
        if not train and None in (cfg, steps, diffusion_steps):
            raise ValueError("sampling FLOPs need the sampling parameters cfg, steps and diffusion_steps")
        if train:
            ratio = truncnorm_mean(self.mask_ratio_min) if mask_ratio is None else mask_ratio
            n_masked = max(1, math.ceil(n * ratio))
            return 3 * self.pass_flops(n_masked) + n_masked * self.diffloss.train_flops_per_token()
        total, masked = 0.0, n
        for n_after in cosine_mask_schedule(n, steps):
            if masked == 0:
                break
            total += self.pass_flops(masked)
            masked = n_after
        return (2 if cfg else 1) * total + n * self.diffloss.sample_flops_per_token(diffusion_steps, bool(cfg))

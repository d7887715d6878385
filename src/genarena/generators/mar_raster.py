"""``mar`` with ``order=raster``: the paper's causal baseline (Li et al. 2024), autoregression over continuous tokens
in raster order with the same diffusion loss.

The encoder and decoder of :class:`~genarena.generators.mar.MARBase` run under a causal mask over
``[class buffer, x_0 .. x_{L-2}]`` (``b + L - 1`` positions); position ``b - 1 + i`` gives the condition ``z_i`` of
token ``i``::

    h = LN(Encoder(LN(z_proj([buffer; x_<L-1]) + pos_enc)))     causal
    z = LN(Decoder(Linear(h) + pos_dec))[b - 1:] + pos_diff      causal

Sampling decodes one token per step with KV caches in both stacks; guidance ramps with the decoded fraction,
``w_i = w i / L``. Tokens ``(B, L, D)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from genarena.generators.backbone import causal_mask
from genarena.generators.mar import MARBase
from genarena.generators.sampling import guidance_weight


class RasterMAR(MARBase):
    """Causal MAR (module docstring). ``mask_ratio_min`` belongs to the random order and is not used here."""

    order = "raster"

    def __init__(self, tokenizer, num_classes: int, mask_ratio_min: float, buffer_size: int, **kwargs: Any) -> None:
        positions = buffer_size + tokenizer.seq_len - 1
        super().__init__(tokenizer, num_classes, positions=positions, buffer_size=buffer_size, **kwargs)
        self.register_buffer("mask", causal_mask(positions), persistent=False)

    def causal_conditions(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """Teacher-forced ``z (B, L, C)`` for ``tokens (B, L, D)``."""
        x = self.embed_inputs(tokens[:, :-1], cond)  # (B, b + L - 1, C)
        x = self.dec_embed(self.enc_norm(self.encoder(x, cond, mask=self.mask)))
        x = self.dec_norm(self.decoder(x + self.dec_pos_embed, cond, mask=self.mask))
        return x[:, self.buffer_size - 1:] + self.diff_pos_embed  # (B, L, C)

    def _causal_step(self, x_in: Tensor, start: int, cond: Tensor, mods: tuple | None = None) -> Tensor:
        """Feed embedded inputs ``(B, n, C)`` at offset ``start`` through both cached stacks (causal among
        themselves; the cache holds only earlier positions); returns the decoder output of the last position
        ``(B, C)``. ``mods``: the two stacks' precomputed modulations of ``cond``."""
        n = x_in.shape[1]
        enc_mods, dec_mods = mods or (None, None)
        mask = self.mask[start:start + n, :start + n] if n > 1 else None
        x = self.z_proj_ln(x_in + self.enc_pos_embed[:, start:start + n])
        x = self.dec_embed(self.enc_norm(self.encoder(x, cond, mask=mask, mods=enc_mods)))
        x = self.decoder(x + self.dec_pos_embed[:, start:start + n], cond, mask=mask, mods=dec_mods)
        return self.dec_norm(x)[:, -1]

    def _raster_decode(self, labels: Tensor, cfg: float, cfg_schedule: str,
                       draw: Callable[[int, Tensor, float | None], Tensor]) -> Tensor:
        """Token-by-token decoding with KV caches; ``draw(i, z_i (B', C), w)`` returns token i ``(B, D)``."""
        buf, n = self.buffer_size, self.seq_len
        cond, doubled = self.conditioned_sample(labels, cfg)
        out = torch.empty(labels.shape[0], n, self.token_dim, device=labels.device)
        mods = (self.encoder.modulations(cond), self.decoder.modulations(cond))  # once: the class is fixed
        self.encoder.start_cache(self.mask.shape[0])
        self.decoder.start_cache(self.mask.shape[0])
        try:
            x_in = cond[:, None].expand(-1, buf, -1)
            for i in range(n):
                z = self._causal_step(x_in, buf - 1 + i if i else 0, cond, mods) + self.diff_pos_embed[:, i]
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
        """The cached decoder's ``z (B, L, C)`` for given tokens (equals the teacher-forced one)."""
        got = []

        def draw(i, z, w):
            got.append(z)
            return tokens[:, i]

        self._raster_decode(labels, 0.0, "constant", draw)
        return torch.stack(got, dim=1)

    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        z = self.causal_conditions(tokens, self.condition(labels))
        return self.diffloss(tokens.flatten(0, 1), z.flatten(0, 1))

    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int, top_p: float,
               diffusion_steps: int, sampler: str = "ddpm", eta: float = 0.0,
               generator: torch.Generator | None = None, noise: Iterator[Tensor] | None = None,
               **_: Any) -> Tensor:
        """Tokens ``(B, L, D)``; ``top_k`` / ``top_p`` do not apply to continuous tokens, ``steps`` (the random
        order's) is one per token here; ``sampler`` / ``eta`` as :meth:`MAR.sample`; ``noise`` replays recorded
        diffusion noise."""
        return self._raster_decode(labels, cfg, cfg_schedule, lambda i, z, w: self.diffloss.sample(
            z, steps=diffusion_steps, temperature=temperature, cfg=w, sampler=sampler, eta=eta, generator=generator,
            noise=noise))

    @torch.no_grad()
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, diffusion_steps: int, sampler: str = "ddpm",
                 eta: float = 0.0, generator: torch.Generator | None = None, **_: Any) -> Tensor:
        """Raster decoding with each known token forced when reached (no diffusion chain runs at a position known in
        every row); like raster ``ar`` it cannot look ahead at known tokens after the current position. Tokens
        ``(B, L, D)``; known tokens equal ``tokens``."""
        keep = self.check_known(tokens, known, labels)  # (B, L)

        def draw(i: int, z: Tensor, w: float | None) -> Tensor:
            if keep[:, i].all():
                return tokens[:, i]
            drawn = self.diffloss.sample(z, steps=diffusion_steps, temperature=temperature, cfg=w, sampler=sampler,
                                         eta=eta, generator=generator)
            return torch.where(keep[:, i, None], tokens[:, i], drawn)

        return self._raster_decode(labels, cfg, cfg_schedule, draw)

    def sampling_steps(self, **_: Any) -> int:
        return self.seq_len

    def flops_per_image(self, train: bool, *, cfg: float | None = None, diffusion_steps: int | None = None,
                        **_: Any) -> float:
        """Training, or sampling (needs ``cfg`` and ``diffusion_steps``)."""
        c, d, buf, n = self.width, self.token_dim, self.buffer_size, self.seq_len
        enc, dec = self.encoder, self.decoder
        if train:
            s = buf + n - 1
            fwd = 2 * (n - 1) * d * c + enc.flops(s) + 2 * s * c * c + dec.flops(s)
            return 3 * fwd + n * self.diffloss.train_flops_per_token()
        if cfg is None or diffusion_steps is None:
            raise ValueError("sampling FLOPs need the sampling parameters cfg and diffusion_steps")
        # AdaLN modulations (shared backbone) are computed once per sampling call, not per step: flops(0)
        fwd = enc.flops(buf, adaln=False) + dec.flops(buf, adaln=False) + 2 * buf * c * c + enc.flops(0) + dec.flops(0)
        for i in range(1, n):
            fwd += enc.flops(1, buf + i, adaln=False) + dec.flops(1, buf + i, adaln=False) + 2 * d * c + 2 * c * c
        return (2 if cfg else 1) * fwd + n * self.diffloss.sample_flops_per_token(diffusion_steps, bool(cfg))

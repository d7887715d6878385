"""``ar``: raster-order next-token prediction (VQGAN / LlamaGen) over the ``vq`` tokenizer.

Sequence of ``L = h*w`` positions: ``[class token, tok_0, ..., tok_{L-2}]``; position i predicts
``tok_i`` under a causal mask. Positions are 2-D rotary (LlamaGen; the class token is not rotated)
or learned. Sampling: one prefill with the class token, then one step per token with a KV cache;
constant guidance by default (LlamaGen's ``cfg_scale`` s is ``w = s - 1``).

``backbone``: ``shared`` runs the shared AdaLN / qk-norm transformer (the class also conditions every
block); ``llama`` runs LlamaGen's GPT (``generators/llama.py``: RMSNorm, SwiGLU, bias-free attention,
2-D RoPE with LlamaGen's zero rows at the class token, the class only as the prefix token, LlamaGen's
init), with token dropout over the whole input sequence (class token included) as LlamaGen applies it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.generators.backbone import causal_mask, rope_2d
from genarena.generators.base import Generator, accuracy
from genarena.generators.dropout import Dropout
from genarena.generators.llama import LlamaHead, LlamaTransformer, llama_init, llamagen_rope
from genarena.generators.sampling import guidance_weight, require_sampling, sample_logits, split_guided

BACKBONES = ("shared", "llama")
POS_EMBEDS = ("rope2d", "learned")  # 2-D rotary (LlamaGen) | learned absolute positions


class RasterAR(Generator):
    name = "ar"
    requires = "discrete"
    order = "raster"
    head_kind = "ce"

    def __init__(self, tokenizer, num_classes: int, pos_embed: str, embed_dropout: float, backbone: str,
                 ffn_multiple_of: int, **shared) -> None:
        super().__init__(tokenizer, num_classes, **shared)
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed={pos_embed!r}; choose one of {', '.join(POS_EMBEDS)}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone={backbone!r}; choose one of {', '.join(BACKBONES)}")
        if backbone == "llama" and pos_embed != "rope2d":
            raise ValueError(f"backbone=llama uses 2-D RoPE; pos_embed={pos_embed!r} needs backbone=shared")
        self.backbone = backbone
        self.seq_len, self.vocab_size, self.pos_kind = tokenizer.seq_len, tokenizer.vocab_size, pos_embed
        c = self.width
        self.token_embed = nn.Embedding(self.vocab_size, c)
        self.embed_drop = Dropout(embed_dropout)
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.seq_len, c))
        else:
            make_rope = llamagen_rope if backbone == "llama" else rope_2d
            cos, sin = make_rope(tokenizer.grid, self.width // self.heads, prefix=1)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("mask", causal_mask(self.seq_len), persistent=False)
        if backbone == "llama":
            self.transformer = LlamaTransformer(self.depth, self.width, self.heads, self.mlp_ratio, ffn_multiple_of,
                                                self.dropout, self.drop_path)
            self.head = LlamaHead(self.width, self.vocab_size)
            llama_init(self, self.head)
            return
        self.transformer = self.make_transformer()
        self.head = self.make_head(self.vocab_size)
        self.finish_init(self.head)
        if pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=(1.0 / (3 * c)) ** 0.5)

    def _positions(self, x: Tensor, start: int) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """Add learned positions to ``x (B, n, C)`` at offset ``start``, or return the RoPE slice."""
        n = x.shape[1]
        if self.pos_kind == "learned":
            return x + self.pos_embed[:, start:start + n], None
        return x, (self.rope_cos[start:start + n], self.rope_sin[start:start + n])

    def forward(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, L, V)`` for ``tokens (B, L)``."""
        cond = self.condition(labels)
        inputs = self.token_embed(tokens[:, :-1])  # (B, L - 1, C)
        if self.backbone == "llama":  # LlamaGen drops out the class token's embedding too
            x = self.embed_drop(torch.cat([cond[:, None], inputs], dim=1))
        else:
            x = torch.cat([cond[:, None], self.embed_drop(inputs)], dim=1)  # (B, L, C)
        x, rope = self._positions(x, 0)
        return self.head(self.transformer(x, cond, mask=self.mask, rope=rope), cond)

    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        logits = self(tokens, labels)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        return {"loss": loss, "acc": accuracy(logits.detach(), tokens)}

    # ------------------------------------------------------------------ decoding
    def _decode(self, labels: Tensor, cfg: float, cfg_schedule: str, choose: Callable[[int, Tensor], Tensor],
                use_cache: bool = True) -> Tensor:
        """Token-by-token decoding; ``choose(i, guided_logits (B, V))`` returns token i ``(B,)``."""
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        mods, head_mod = self.transformer.modulations(cond), self.head.modulation(cond)  # once: the class is fixed
        prefix = cond[:, None]  # (B', 1, C)
        out = torch.empty(labels.shape[0], self.seq_len, dtype=torch.long, device=labels.device)
        if use_cache:
            self.transformer.start_cache(self.seq_len)
        try:
            x = prefix
            for i in range(self.seq_len):
                start = i if use_cache else 0
                xi, rope = self._positions(x, start)
                mask = None if use_cache else self.mask[: x.shape[1], : x.shape[1]]
                h = self.transformer(xi, cond, mask=mask, rope=rope, mods=mods)[:, -1]
                w = guidance_weight(cfg, cfg_schedule, i / max(1, self.seq_len - 1)) if doubled else None
                tok = choose(i, split_guided(self.head(h[:, None], cond, head_mod)[:, 0], w))
                out[:, i] = tok
                emb = self.token_embed(torch.cat([tok, tok]) if doubled else tok)[:, None]
                x = emb if use_cache else torch.cat([x, emb], dim=1)
        finally:
            self.transformer.stop_cache()
        return out

    @torch.no_grad()
    def incremental_logits(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """KV-cached logits ``(B, L, V)`` for given ``tokens`` (equal to :meth:`forward`'s)."""
        got = []

        def choose(i, logits):
            got.append(logits)
            return tokens[:, i]

        self._decode(labels, 0.0, "constant", choose)
        return torch.stack(got, dim=1)

    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int,
               top_p: float, generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
        """``use_cache=False`` recomputes the whole prefix every step (for benchmarks)."""
        return self._decode(labels, cfg, cfg_schedule,
                            lambda i, logits: sample_logits(logits, temperature, top_k, top_p, generator),
                            use_cache=use_cache)

    @torch.no_grad()
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, generator: torch.Generator | None = None) -> Tensor:
        """Raster decoding with each known token forced when its position is reached (it is fed back as if drawn).
        A causal model cannot look ahead: a token is drawn from the known tokens before it in raster order only,
        so known tokens below or right of a hole (in-painting, ``left`` / ``top`` out-painting) condition nothing
        before them and seams there are common. Returns ``(B, L)``; known tokens equal ``tokens``."""
        keep = self.check_known(tokens, known, labels)  # (B, L)

        def choose(i: int, logits: Tensor) -> Tensor:
            drawn = sample_logits(logits, temperature, top_k, top_p, generator)
            return torch.where(keep[:, i], tokens[:, i], drawn)

        return self._decode(labels, cfg, cfg_schedule, choose)

    # ------------------------------------------------------------------ cost
    def sampling_steps(self, **sampling) -> int:
        return self.seq_len

    def flops_per_image(self, train: bool, *, cfg: float | None = None, **sampling) -> float:
        c, v, L = self.width, self.vocab_size, self.seq_len
        head_per_token = 2 * c * v
        head_adaln = 4 * c * c if self.backbone == "shared" else 0  # once per sequence (train) or sampling call
        if train:
            return 3 * (self.transformer.flops(L) + L * head_per_token + head_adaln)
        require_sampling(cfg=cfg)
        # AdaLN modulations (shared backbone) are computed once per sampling call, not per step: flops(0)
        steps = sum(self.transformer.flops(1, i + 1, adaln=False) for i in range(L)) + self.transformer.flops(0)
        total = steps + L * head_per_token + head_adaln
        return (2 if cfg else 1) * total

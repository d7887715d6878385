"""``var``: next-scale prediction (Tian et al. 2024) over the ``msvq`` tokenizer.

Sequence (``L = sum_k pn_k^2`` positions, scales small to large)::

    position block 0   : start token = class embedding           -> predicts scale 0 (1x1)
    position block k>0 : word_embed(area_down(f_hat_{<k}, pn_k))  -> predicts scale k

Each position adds a learned position embedding and its scale's level embedding. Training uses the
block-causal mask (a token sees its own and all coarser scales) and cross-entropy over all tokens.
Sampling decodes one scale per step, all its tokens in parallel, with a KV cache across scales;
guidance ramps linearly from 0 at the first scale to ``cfg`` at the last (``w_k = cfg k / (K - 1)``).

Official details (FoundationVision/VAR), selectable: ``k_bias=False`` gives the attention keys no bias
(only q and v have one), and ``init="official"`` is VAR's ``init_weights``: every linear and embedding
trunc-normal with ``std = sqrt(1 / 3C)`` and zero bias, AdaLN weights times ``init_adaln`` (gate rows
times ``init_adaln_gamma``) with zero bias, head weights times ``init_head``, and the attention and MLP
output projections divided by ``sqrt(2 depth)``. ``init="shared"`` is the shared backbone's init
(AdaLN weights zero, gates ``gate_init``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.generators.backbone import Block, block_causal_mask
from genarena.generators.base import Generator
from genarena.generators.sampling import guidance_weight, require_sampling, sample_logits, split_guided

INITS = ("shared", "official")
# editing: a scale with at most this many tokens is taken whole from the input when any token is known (its few
# tokens are image-wide averages that no region alone determines; VAR's in-painting does the same)
WHOLE_SCALE_TOKENS = 3


def scale_known(known: Tensor, side: int) -> Tensor:
    """Which tokens of a ``side x side`` scale are kept in editing, from ``known (B, h, w)`` over the last scale:
    those with more than half of the last-scale area under them known (the area-downsampled mask > 0.5), and the
    whole scale when it has at most :data:`WHOLE_SCALE_TOKENS` tokens and the image has a known token.
    Returns bool ``(B, side, side)``; the last scale (``side == h``) gives ``known`` itself."""
    if side == known.shape[-1]:
        return known
    frac = F.interpolate(known[:, None].float(), size=(side, side), mode="area")[:, 0]  # (B, side, side)
    keep = frac > 0.5
    if side * side <= WHOLE_SCALE_TOKENS:
        keep |= known.flatten(1).any(1)[:, None, None]
    return keep


class VAR(Generator):
    name = "var"
    requires = "multiscale"
    order = "next-scale"
    head_kind = "ce"

    def __init__(self, tokenizer, num_classes: int, k_bias: bool, init: str, init_adaln: float,
                 init_adaln_gamma: float, init_head: float, **backbone) -> None:
        super().__init__(tokenizer, num_classes, **backbone)
        if init not in INITS:
            raise ValueError(f"init={init!r}; choose one of {', '.join(INITS)}")
        self.vocab_size = v = tokenizer.vocab_size
        self.build_sequence(tokenizer)
        self.transformer = self.make_transformer(k_bias=k_bias)
        self.head = self.make_head(v)
        if init == "official":
            self.official_init(init_adaln, init_adaln_gamma, init_head)
            return
        self.finish_init()
        self.head.proj.weight.data.mul_(init_head)
        self.head.proj.bias.data.zero_()
        self.init_positions()

    def build_sequence(self, tokenizer) -> None:
        """The next-scale sequence of ``tokenizer.scales``: input projection ``word_embed``, start, position and level
        embeddings and the block-causal mask (shared with :class:`~genarena.generators.var_diffusion.VARDiffusion`)."""
        c = self.width
        self.scales = tuple(tokenizer.scales)
        self.block_sizes = [p * p for p in self.scales]
        self.seq_len = sum(self.block_sizes)
        self.word_embed = nn.Linear(tokenizer.token_dim, c)
        self.start_pos = nn.Parameter(torch.zeros(1, self.block_sizes[0], c))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.seq_len, c))
        self.lvl_embed = nn.Embedding(len(self.scales), c)
        self.register_buffer("levels", torch.cat([torch.full((n,), i) for i, n in enumerate(self.block_sizes)]),
                             persistent=False)
        self.register_buffer("mask", block_causal_mask(self.block_sizes), persistent=False)

    def init_positions(self) -> None:
        """The shared init of the start and position embeddings: trunc-normal, ``std = sqrt(1 / 3C)``."""
        std = (1.0 / (3 * self.width)) ** 0.5
        for p in (self.start_pos, self.pos_embed):
            nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)

    @torch.no_grad()
    def official_init(self, adaln: float, adaln_gamma: float, head: float) -> None:
        """VAR's ``init_weights`` (see the module docstring); the q/k scale keeps its log 4 and q/v biases 0."""
        c = self.width
        std = math.sqrt(1 / (3 * c))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.start_pos, self.pos_embed):
            nn.init.trunc_normal_(p, std=std)
        self.head.proj.weight.mul_(head)
        self.head.proj.bias.zero_()
        self.head.ada[1].weight.mul_(adaln)
        for block in self.modules():
            if isinstance(block, Block):
                block.attn.proj.weight.div_(math.sqrt(2 * self.depth))
                block.mlp[2].weight.div_(math.sqrt(2 * self.depth))
                block.ada[1].weight[2 * c:].mul_(adaln)  # scales and shifts
                block.ada[1].weight[:2 * c].mul_(adaln_gamma)  # gates

    @property
    def quantizer(self):
        return self.tokenizer.quantizer

    def _embed(self, x: Tensor, start: int) -> Tensor:
        """Add position and level embeddings to ``x (B, n, C)`` placed at sequence offset ``start``."""
        n = x.shape[1]
        return x + self.pos_embed[:, start:start + n] + self.lvl_embed(self.levels[start:start + n])

    def forward(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, L, V)`` for concatenated scale indices ``tokens (B, L)``."""
        cond = self.condition(labels)
        indices = self.tokenizer.split_scales(tokens)
        inputs = self.word_embed(self.quantizer.teacher_forcing_inputs(indices))  # (B, L - pn0^2, C)
        start = cond[:, None] + self.start_pos  # (B, pn0^2, C)
        x = self._embed(torch.cat([start.expand(-1, self.block_sizes[0], -1), inputs], dim=1), 0)
        h = self.transformer(x, cond, mask=self.mask)
        return self.head(h, cond)

    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        logits = self(tokens, labels)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), reduction="none").view_as(tokens)
        return {"loss": ce.mean(), **self.diagnostics(ce.detach(), logits.detach(), tokens)}

    @torch.no_grad()
    def diagnostics(self, ce: Tensor, logits: Tensor, tokens: Tensor) -> dict[str, Tensor]:
        """Accuracy and per-scale loss / accuracy (outside the graph; one segment sum per statistic):
        ``ce (B, L)`` per-token losses, ``logits (B, L, V)``, ``tokens (B, L)``."""
        k = len(self.scales)
        stats = torch.stack([ce.mean(0), (logits.argmax(-1) == tokens).float().mean(0)])  # (2, L)
        per_scale = stats.new_zeros(2, k).index_add_(1, self.levels, stats) / stats.new_tensor(self.block_sizes)
        acc = stats[1].mean()  # the mean over positions of per-position means: the mean over tokens
        loss_k, acc_k = per_scale.unbind(0)  # (K,) each
        out = {"acc": acc, "loss_last": loss_k[-1], "acc_last": acc_k[-1], "loss_scale_mean": loss_k.mean(),
               "acc_scale_mean": acc_k.mean()}
        for i in range(k):
            out[f"loss_s{i}"], out[f"acc_s{i}"] = loss_k[i], acc_k[i]
        return out

    # ------------------------------------------------------------------ incremental decoding
    def _decode(self, labels: Tensor, cfg: float, cfg_schedule: str,
                choose: Callable[[int, Tensor], Tensor]) -> Tensor:
        """Scale-by-scale decoding with a KV cache. ``choose(k, guided_logits (B, pn^2, V))`` returns the
        indices of scale k; returns concatenated indices ``(B, L)``."""
        b = labels.shape[0]
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        mods, head_mod = self.transformer.modulations(cond), self.head.modulation(cond)  # once: the class is fixed
        x = cond[:, None] + self.start_pos
        f_hat, offset, chosen = None, 0, []
        self.transformer.start_cache(self.seq_len)
        try:
            for k, pn in enumerate(self.scales):
                h = self.transformer(self._embed(x, offset), cond, mods=mods)
                logits = self.head(h, cond, head_mod)
                w = guidance_weight(cfg, cfg_schedule, k / max(1, len(self.scales) - 1)) if doubled else None
                idx = choose(k, split_guided(logits, w))  # (B, pn^2)
                chosen.append(idx)
                offset += pn * pn
                f_hat, nxt = self.quantizer.next_scale_input(k, f_hat, idx.view(b, pn, pn))
                if nxt is not None:
                    x = self.word_embed(torch.cat([nxt, nxt]) if doubled else nxt)
        finally:
            self.transformer.stop_cache()
        return torch.cat(chosen, dim=1)

    @torch.no_grad()
    def incremental_logits(self, tokens: Tensor, labels: Tensor) -> Tensor:
        """Logits ``(B, L, V)`` of the KV-cached decoder fed the given ``tokens`` (no guidance); equal to
        the teacher-forced :meth:`forward` logits."""
        got, sizes = [], self.block_sizes
        given = tokens.split(sizes, dim=1)

        def choose(k, logits):
            got.append(logits)
            return given[k]

        self._decode(labels, 0.0, "constant", choose)
        return torch.cat(got, dim=1)

    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int,
               top_p: float, generator: torch.Generator | None = None) -> Tensor:
        return self._decode(labels, cfg, cfg_schedule,
                            lambda k, logits: sample_logits(logits, temperature, top_k, top_p, generator))

    @torch.no_grad()
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, generator: torch.Generator | None = None) -> Tensor:
        """In-/out-painting as VAR's zero-shot editing: at every scale the known part of that scale's tokens is the
        input's (``tokens``, the tokenizer's multi-scale encoding of the image) and the rest is sampled, so each next
        scale is predicted from a map whose known region is the input's. ``known (B, h, w)`` is over the last scale;
        :func:`scale_known` maps it to each scale. Returns ``(B, L)``; kept tokens equal ``tokens``."""
        self.check_known(tokens, known, labels)
        given = tokens.split(self.block_sizes, dim=1)
        keep = [scale_known(known.to(tokens.device), pn).flatten(1) for pn in self.scales]  # [(B, pn^2)]

        def choose(k: int, logits: Tensor) -> Tensor:
            drawn = sample_logits(logits, temperature, top_k, top_p, generator)
            return torch.where(keep[k], given[k], drawn)

        return self._decode(labels, cfg, cfg_schedule, choose)

    @torch.no_grad()
    def sample_progression(self, labels: Tensor, generator: torch.Generator | None = None, **sampling) -> list[Tensor]:
        """Samples decoded after 1, 2, ..., K scales (coarse to fine), each ``(B, C, H, W)``."""
        return self.tokenizer.decode_progression(self.sample(labels, generator=generator, **sampling))

    def extra_image_grids(self, labels: Tensor, *, generator: torch.Generator | None = None,
                          **sampling) -> dict[str, list[Tensor]]:
        return {"coarse_to_fine": self.sample_progression(labels, generator=generator, **sampling)}

    # ------------------------------------------------------------------ cost
    def sampling_steps(self, **sampling) -> int:
        return len(self.scales)

    def flops_per_image(self, train: bool, *, cfg: float | None = None, **sampling) -> float:
        c, v, d = self.width, self.vocab_size, self.tokenizer.token_dim
        L = self.seq_len
        side = self.scales[-1]
        embed = 2 * (L - self.block_sizes[0]) * d * c
        head = L * 2 * c * v + 2 * c * 2 * c
        if train:
            # tokenizer side: phi convs building the teacher-forcing inputs (K - 1 scales, no grad)
            phi = (len(self.scales) - 1) * 2 * 9 * d * d * side * side
            return 3 * (self.transformer.flops(L) + embed + head) + phi
        require_sampling(cfg=cfg)
        # cached: scale k's tokens attend to all tokens up to and including scale k
        attn_total, seen = self.transformer.flops(0), 0  # the modulations: once per sampling call
        for n in self.block_sizes:
            seen += n
            attn_total += self.transformer.flops(n, seen, adaln=False)
        phi = len(self.scales) * 2 * 9 * d * d * side * side
        mult = 2 if cfg else 1
        return mult * (attn_total + embed + head) + phi

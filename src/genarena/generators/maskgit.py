"""``maskgit``: bidirectional masked-token prediction (Chang et al. 2022) over the ``vq`` tokenizer.

Training: per image, ``r ~ U(0, 1)``, mask ``ceil(N cos(pi/2 r))`` random tokens (replaced by the
[MASK] id ``V``); cross-entropy (with label smoothing) on the masked tokens only. The sequence is
``[class token, tok_0 .. tok_{N-1}]`` with learned positions and no attention mask.

Decoding in T steps: predict every masked token and sample it; confidence =
``log p(sampled) + tau (1 - (t+1)/T) * Gumbel`` (``tau`` = choice temperature, revealed tokens get
+inf); keep the most confident and re-mask ``floor(N cos(pi/2 (t+1)/T))`` (see
:func:`cosine_mask_schedule`). Guidance ramps linearly over steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.generators.base import Generator
from genarena.generators.sampling import (
    cosine_mask_schedule,
    guidance_weight,
    gumbel_noise,
    log_prob_of,
    sample_logits,
    split_guided,
)


class MaskGIT(Generator):
    name = "maskgit"
    requires = "discrete"

    def __init__(self, tokenizer, num_classes: int, label_smoothing: float, **backbone) -> None:
        super().__init__(tokenizer, num_classes, **backbone)
        self.seq_len, self.vocab_size = tokenizer.seq_len, tokenizer.vocab_size
        self.mask_id = self.vocab_size
        self.label_smoothing = label_smoothing
        c = self.width
        self.token_embed = nn.Embedding(self.vocab_size + 1, c)  # + [MASK]
        self.pos_embed = nn.Parameter(torch.zeros(1, self.seq_len + 1, c))
        self.transformer = self.make_transformer()
        self.head = self.make_head(self.vocab_size)
        self.finish_init(self.head)
        nn.init.trunc_normal_(self.pos_embed, std=(1.0 / (3 * c)) ** 0.5)

    def forward(self, tokens: Tensor, cond: Tensor) -> Tensor:
        """Logits ``(B, N, V)`` for partially masked ``tokens (B, N)`` (mask id = V) and class embedding ``cond``."""
        x = torch.cat([cond[:, None], self.token_embed(tokens)], dim=1) + self.pos_embed
        return self.head(self.transformer(x, cond)[:, 1:], cond)

    def random_mask(self, b: int, device) -> Tensor:
        """Training mask ``(B, N)``: ``ceil(N cos(pi/2 r))`` random positions per image, ``r ~ U(0,1)``."""
        r = torch.rand(b, device=device)
        n_mask = torch.ceil(torch.cos(math.pi / 2 * r) * self.seq_len).clamp(min=1).long()
        ranks = torch.rand(b, self.seq_len, device=device).argsort(dim=1).argsort(dim=1)
        return ranks < n_mask[:, None]

    def loss(self, tokens: Tensor, labels: Tensor) -> dict[str, Tensor]:
        mask = self.random_mask(tokens.shape[0], tokens.device)
        logits = self(tokens.masked_fill(mask, self.mask_id), self.condition(labels))
        ce = F.cross_entropy(logits[mask].float(), tokens[mask], label_smoothing=self.label_smoothing)
        acc = (logits.detach()[mask].argmax(-1) == tokens[mask]).float().mean()
        return {"loss": ce, "acc": acc, "mask_ratio": mask.float().mean()}

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def sample(self, labels: Tensor, *, cfg: float, cfg_schedule: str, temperature: float, top_k: int,
               top_p: float, generator: torch.Generator | None = None, steps: int = 8,
               choice_temperature: float = 4.5, trace: list | None = None) -> Tensor:
        """``trace``, when given a list, receives the boolean revealed-map ``(B, N)`` after each step."""
        b, n, dev = labels.shape[0], self.seq_len, labels.device
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        tokens = torch.full((b, n), self.mask_id, dtype=torch.long, device=dev)
        for t, n_masked_after in enumerate(cosine_mask_schedule(n, steps)):
            unknown = tokens == self.mask_id
            if not unknown.any():
                if trace is not None:
                    trace.append(~unknown)
                continue
            inp = torch.cat([tokens, tokens]) if doubled else tokens
            w = guidance_weight(cfg, cfg_schedule, t / max(1, steps - 1)) if doubled else None
            logits = split_guided(self(inp, cond), w)
            sampled = sample_logits(logits, temperature, top_k, top_p, generator)
            sampled = torch.where(unknown, sampled, tokens)
            anneal = choice_temperature * (1 - (t + 1) / steps)
            confidence = log_prob_of(logits, sampled) + anneal * gumbel_noise(sampled.shape, generator, dev)
            confidence = confidence.masked_fill(~unknown, float("inf"))  # revealed tokens are never re-masked
            # re-mask the n_masked_after least confident positions, reveal the rest
            remask = torch.zeros_like(unknown)
            if n_masked_after > 0:
                lowest = confidence.topk(n_masked_after, dim=1, largest=False).indices
                remask.scatter_(1, lowest, True)
            tokens = torch.where(remask, torch.full_like(tokens, self.mask_id), sampled)
            if trace is not None:
                trace.append(tokens != self.mask_id)
        return tokens

    # ------------------------------------------------------------------ cost
    def sampling_steps(self, steps: int = 8, **sampling) -> int:
        return min(steps, self.seq_len)

    def flops_per_image(self, train: bool, cfg: float = 0.0, steps: int = 8, **sampling) -> float:
        c, v, n = self.width, self.vocab_size, self.seq_len
        per_pass = self.transformer.flops(n + 1) + n * 2 * c * v + 4 * c * c
        if train:
            return 3 * per_pass
        return (2 if cfg else 1) * self.sampling_steps(steps=steps) * per_pass

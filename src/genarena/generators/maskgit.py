"""``maskgit``: bidirectional masked-token prediction (Chang et al. 2022) over the ``vq`` tokenizer.

Training: per image, ``r ~ U(0, 1)``, mask ``ceil(N cos(pi/2 r))`` random tokens (replaced by the
[MASK] id ``V``); cross-entropy (with label smoothing) on the masked tokens only. The sequence is
``[class token, tok_0 .. tok_{N-1}]`` with learned positions and no attention mask.

Decoding in T steps (google-research/maskgit ``parallel_decode.decode``): predict every masked token
and sample it; confidence = ``log p(sampled) + tau (1 - (t+1)/T) * Gumbel`` (``tau`` = choice
temperature, revealed tokens get +inf, so they are never re-masked); keep the most confident and
re-mask ``max(1, min(masked - 1, floor(N cos(pi/2 (t+1)/T))))`` in float32 (see :func:`cosine_mask_schedule`);
the last step reveals everything. Guidance (absent from the original; the PyTorch reproduction's)
ramps linearly over steps: ``w_t = cfg t / (T - 1)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from genarena.generators.base import Generator, rows_by_count
from genarena.generators.sampling import (
    cosine_mask_schedule,
    guidance_weight,
    gumbel_noise,
    log_prob_of,
    require_sampling,
    sample_logits,
    split_guided,
)


class MaskGIT(Generator):
    name = "maskgit"
    requires = "discrete"
    order = "masked"
    head_kind = "ce"

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
               top_p: float, steps: int, choice_temperature: float, generator: torch.Generator | None = None,
               trace: list | None = None) -> Tensor:
        """``trace``, when given a list, receives the boolean revealed-map ``(B, N)`` after each step."""
        b, n, dev = labels.shape[0], self.seq_len, labels.device
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        tokens = torch.full((b, n), self.mask_id, dtype=torch.long, device=dev)
        for t, n_masked_after in enumerate(cosine_mask_schedule(n, steps, float32=True)):
            inp = torch.cat([tokens, tokens]) if doubled else tokens
            w = guidance_weight(cfg, cfg_schedule, t / max(1, steps - 1)) if doubled else None
            logits = split_guided(self(inp, cond), w)
            sampled = sample_logits(logits, temperature, top_k, top_p, generator)
            noise = gumbel_noise(sampled.shape, generator, dev)
            tokens = reveal_step(tokens, logits, sampled, noise, choice_temperature * (1 - (t + 1) / steps),
                                 n_masked_after, self.mask_id)
            if trace is not None:
                trace.append(tokens != self.mask_id)
        return tokens

    @torch.no_grad()
    def complete(self, tokens: Tensor, known: Tensor, labels: Tensor, *, cfg: float, cfg_schedule: str,
                 temperature: float, top_k: int, top_p: float, steps: int, choice_temperature: float,
                 generator: torch.Generator | None = None) -> Tensor:
        """Decoding that starts with the known tokens revealed and the others masked; the cosine schedule counts the
        unknown tokens (``U`` of them: ``floor(U cos(pi/2 (t+1)/T))`` stay masked after step t), so every step reveals
        a share of the hole, and known tokens, confident by construction, are never re-masked. Rows with different
        ``U`` run as separate groups. Returns ``(B, N)``; known tokens equal ``tokens``."""
        keep = self.check_known(tokens, known, labels)
        options = dict(cfg=cfg, cfg_schedule=cfg_schedule, temperature=temperature, top_k=top_k, top_p=top_p,
                       steps=steps, choice_temperature=choice_temperature, generator=generator)
        groups = rows_by_count(~keep)
        if len(groups) > 1:
            out = tokens.clone()
            for rows in groups:
                out[rows] = self.complete(tokens[rows], known[rows], labels[rows], **options)
            return out
        n_unknown = int((~keep[0]).sum())
        if n_unknown == 0:
            return tokens.clone()
        all_labels, doubled = self.guidance_labels(labels, cfg)
        cond = self.class_embed(all_labels)
        out = tokens.masked_fill(~keep, self.mask_id)
        for t, n_masked_after in enumerate(cosine_mask_schedule(n_unknown, steps, float32=True)):
            inp = torch.cat([out, out]) if doubled else out
            w = guidance_weight(cfg, cfg_schedule, t / max(1, steps - 1)) if doubled else None
            logits = split_guided(self(inp, cond), w)
            sampled = sample_logits(logits, temperature, top_k, top_p, generator)
            noise = gumbel_noise(sampled.shape, generator, out.device)
            out = reveal_step(out, logits, sampled, noise, choice_temperature * (1 - (t + 1) / steps),
                              n_masked_after, self.mask_id)
        return out

    # ------------------------------------------------------------------ cost
    def sampling_steps(self, *, steps: int, **sampling) -> int:
        return steps

    def flops_per_image(self, train: bool, *, cfg: float | None = None, steps: int | None = None,
                        **sampling) -> float:
        c, v, n = self.width, self.vocab_size, self.seq_len
        per_pass = self.transformer.flops(n + 1) + n * 2 * c * v + 4 * c * c
        if train:
            return 3 * per_pass
        require_sampling(cfg=cfg, steps=steps)
        return (2 if cfg else 1) * steps * per_pass


def reveal_step(tokens: Tensor, logits: Tensor, sampled: Tensor, noise: Tensor, choice_temperature: float,
                n_masked_after: int, mask_id: int) -> Tensor:
    """One decoding step after sampling: tokens ``(B, N)`` (``mask_id`` where unknown), guided logits
    ``(B, N, V)``, sampled ids ``(B, N)`` and Gumbel noise ``(B, N)`` -> the next tokens ``(B, N)``.

    Unknown positions take their sampled id; confidence = ``log p(sampled) + choice_temperature * noise``
    (+inf where already known); the ``n_masked_after`` least confident are masked again."""
    unknown = tokens == mask_id
    sampled = torch.where(unknown, sampled, tokens)
    confidence = log_prob_of(logits, sampled) + choice_temperature * noise
    confidence = confidence.masked_fill(~unknown, float("inf"))  # revealed tokens are never re-masked
    remask = torch.zeros_like(unknown)
    if n_masked_after > 0:
        remask.scatter_(1, confidence.topk(n_masked_after, dim=1, largest=False).indices, True)
    return torch.where(remask, torch.full_like(tokens, mask_id), sampled)


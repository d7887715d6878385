"""Sampling helpers shared by the paradigms: guidance, schedules, temperature, top-k / top-p.

Guidance convention (one for all paradigms): with weight ``w``,
``guided = cond + w (cond - uncond)``, so ``w = 0`` is the plain conditional model. (VAR writes
this as ``(1 + t) cond - t uncond``; MAR's and MaskGIT's ``cfg`` equals ``1 + w``.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def require_sampling(**values: object) -> None:
    """Raise ``TypeError`` naming each sampling parameter passed as ``None`` (for functions that need
    the sampling config only in some modes, e.g. FLOPs of sampling but not of training)."""
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise TypeError(f"missing sampling parameter(s) {', '.join(missing)}: pass the generator's sampling config")


def guidance_weight(cfg: float, schedule: str, progress: float) -> float:
    """The weight at a point of decoding: ``constant`` -> ``cfg``; ``linear`` -> ``cfg * progress``
    with ``progress`` in ``[0, 1]`` (over steps, scales or revealed tokens)."""
    if schedule == "constant":
        return cfg
    if schedule == "linear":
        return cfg * progress
    raise ValueError(f"cfg_schedule={schedule!r}; choose constant or linear")


def guide(cond: Tensor, uncond: Tensor, w: float) -> Tensor:
    """``cond + w (cond - uncond)``."""
    return cond if w == 0 else cond + w * (cond - uncond)


def split_guided(out: Tensor, w: float | None) -> Tensor:
    """A doubled batch ``[cond; uncond]`` -> guided output for the conditional half (or ``out`` when
    the batch was not doubled, ``w is None``)."""
    if w is None:
        return out
    cond, uncond = out.chunk(2)
    return guide(cond, uncond, w)


def filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """Mask all but the ``top_k`` largest logits and the smallest set with probability >= ``top_p``.
    ``top_k <= 0`` and ``top_p`` outside ``(0, 1)`` disable each filter. ``logits (..., V)``."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        remove = remove.scatter(-1, order, remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def sample_logits(logits: Tensor, temperature: float, top_k: int, top_p: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """Draw token ids from ``logits (..., V)``; temperature 0 is greedy (argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    ids = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
    return ids


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device) -> Tensor:
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0)
    return -torch.log((-torch.log(u)).clamp_min(1e-20))


def cosine_mask_schedule(num_tokens: int, steps: int, float32: bool = False) -> list[int]:
    """MaskGIT / MAR: tokens still masked after each step t < T - 1,
    ``max(1, min(masked_before - 1, floor(N cos(pi/2 (t+1)/T))))``, and 0 after the last step: every
    step reveals at least one token while more than one is masked, and the last masked token waits
    for the final step (as the official decoders do). Length ``steps``.

    ``float32`` evaluates ``N cos(pi/2 (t+1)/T)`` in float32 as MaskGIT's JAX decoder does; MAR's
    decoder uses float64. They differ where the product lies within float32 rounding of an integer
    (e.g. ``N/2`` at ``(t+1)/T = 2/3``: float32 gives one token fewer)."""
    remaining, out = num_tokens, []
    for t in range(steps):
        if t == steps - 1:
            n = 0
        elif float32:
            ratio = torch.tensor(float(t + 1), dtype=torch.float32) / steps
            cos = torch.cos(torch.tensor(math.pi / 2, dtype=torch.float32) * ratio).clamp(1e-6, 1.0)
            n = int(torch.floor(torch.tensor(float(num_tokens), dtype=torch.float32) * cos))
        else:
            n = math.floor(num_tokens * math.cos(math.pi / 2 * (t + 1) / steps))
        if t < steps - 1:
            n = max(1, min(remaining - 1, n))
        out.append(n)
        remaining = n
    return out


def log_prob_of(logits: Tensor, ids: Tensor) -> Tensor:
    """``log softmax(logits)`` at ``ids``: ``(..., V), (...) -> (...)``."""
    return F.log_softmax(logits.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)

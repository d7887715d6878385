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
    """The reference filter: mask all but the ``top_k`` largest logits (a tie at the k-th value is kept whole)
    and the smallest set, largest first, whose probability reaches ``top_p`` (the token that crosses it is
    kept). ``top_k <= 0`` and ``top_p`` outside ``(0, 1)`` disable each filter. ``logits (..., V)``.
    :func:`sample_logits` draws from the distribution it leaves without masking the whole vocabulary."""
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


def candidate_cdf(logits: Tensor, temperature: float, top_k: int, top_p: float
                  ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The distribution :func:`filter_logits` leaves of ``softmax(logits / temperature)`` (``temperature > 0``), as
    a cumulative sum over the candidates only.

    ``logits (N, V)`` -> ``cum (N, K)``, ``ids (N, K)`` and ``n_keep (N, 1)``:

    - top-k (``0 < top_k < V``): one ``topk`` (largest first, ``K = top_k``); softmax and cumsum over those values
      alone. A tie between the k-th and the (k+1)-th value (the reference keeps every tied logit) sends the
      batch through the reference filter instead (``K = V``, vocabulary order, ``ids`` None).
    - top-p alone: a full sort (``K = V``, largest first); neither filter: ``K = V`` in vocabulary order, ``ids``
      None (``cum`` is then indexed by token id).
    - top-p (with or without top-k): ``n_keep`` candidates are kept, a prefix of each row: those whose
      preceding mass is below ``top_p`` (the reference's rule). Without top-p ``n_keep`` is None (all ``K``)."""
    v = logits.shape[-1]
    use_k, use_p = 0 < top_k < v, 0 < top_p < 1
    ids = None
    if use_k:
        vals, ids = logits.topk(top_k + 1, dim=-1)  # (N, k + 1), sorted: the (k+1)-th reveals a tie at the k-th
        if bool((vals[:, top_k] == vals[:, top_k - 1]).any()):
            probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)  # (N, V)
            return probs.cumsum(-1), None, None
        vals, ids = vals[:, :top_k], ids[:, :top_k]  # (N, k)
    elif use_p:
        vals, ids = logits.sort(dim=-1, descending=True)  # (N, V)
    else:
        vals = logits
    probs = (vals.float() / temperature).softmax(-1)
    cum = probs.cumsum(-1)
    if not use_p:
        return cum, ids, None
    return cum, ids, ((cum - probs) < top_p).sum(-1, keepdim=True)  # n_keep (N, 1) >= 1


def sample_logits(logits: Tensor, temperature: float, top_k: int, top_p: float,
                  generator: torch.Generator | None = None) -> Tensor:
    """Draw token ids ``(...)`` from ``logits (..., V)`` filtered by top-k, then top-p (:func:`filter_logits`'s
    distribution); temperature 0 is greedy (argmax).

    Inverse CDF over the candidates of :func:`candidate_cdf`: one uniform ``u`` per row, and the first candidate
    whose cumulative mass exceeds ``u`` times the kept mass (no full-vocabulary sort with top-k, no exponential
    draw per logit). A candidate whose probability is below float32 rounding of the running sum (< 6e-8 of the
    mass) cannot be drawn: at most ``K * 6e-8`` of total variation."""
    if temperature <= 0:
        return logits.argmax(-1)
    shape, v = logits.shape[:-1], logits.shape[-1]
    cum, ids, n_keep = candidate_cdf(logits.reshape(-1, v), temperature, top_k, top_p)  # (N, K)
    total = cum[:, -1:] if n_keep is None else cum.gather(-1, n_keep - 1)  # (N, 1): the kept mass
    u = torch.rand(total.shape, generator=generator, device=cum.device, dtype=cum.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total: never past the last kept
    pos = torch.searchsorted(cum, u, right=True)  # (N, 1): first candidate with cum > u (never a zero-mass one)
    return (pos if ids is None else ids.gather(-1, pos)).view(shape)


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

"""Fast paths equal the reference they replace: the top-k / top-p sampler, the preallocated KV cache, precomputed
conditioning, DropPath on the keep mask, MAR's batched diffusion sampler and DDIM."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genarena.generators.sampling import candidate_cdf, filter_logits, sample_logits

FIXTURES = Path(__file__).parent / "fixtures" / "official"


# ------------------------------------------------------------------------------------------- sampler
def kept_by_fast_path(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """The boolean ``(N, V)`` set of candidates :func:`candidate_cdf` can draw from (positive mass, kept by top-p)."""
    cum, ids, n_keep = candidate_cdf(logits, 1.0, top_k, top_p)
    mass = torch.diff(cum, dim=-1, prepend=torch.zeros_like(cum[:, :1])) > 0
    if n_keep is not None:
        mass &= torch.arange(cum.shape[-1]) < n_keep
    if ids is None:
        return mass
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, ids, mass)


def reference_probs(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    return filter_logits(logits.float() / temperature, top_k, top_p).softmax(-1)


def reference_sample(logits, temperature, top_k, top_p, generator):
    """The sampler this project used before (and VAR's official one): filter, softmax, ``torch.multinomial``."""
    probs = reference_probs(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def tv_tolerance(probs: torch.Tensor, n: int, delta: float = 1e-6) -> float:
    """A bound on the total-variation distance between ``probs`` and the frequencies of ``n`` independent draws
    from it, exceeded with probability below ``delta``: ``E TV <= 1/2 sum_i sqrt(p_i (1 - p_i) / n)`` (Jensen), and
    one draw moves TV by at most ``1/n``, so McDiarmid gives ``P(TV > E TV + t) <= exp(-2 n t^2)``."""
    mean = 0.5 * (probs * (1 - probs) / n).sqrt().sum().item()
    return mean + math.sqrt(math.log(1 / delta) / (2 * n))


def frequencies(ids: torch.Tensor, v: int) -> torch.Tensor:
    return torch.bincount(ids, minlength=v).double() / ids.numel()


def test_fast_sampler_keeps_the_official_candidate_sets():
    """VAR's fixture: the sets ``sample_with_top_k_top_p_`` (official) keeps, for top-k alone, top-p alone and both."""
    fx = torch.load(FIXTURES / "var.pt", weights_only=True)
    logits = fx["filter_logits"].flatten(0, 1)
    for (top_k, top_p), kept in zip(fx["filters"], fx["filter_kept"]):
        assert torch.equal(kept_by_fast_path(logits, top_k, top_p), kept.flatten(0, 1)), (top_k, top_p)


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (1, 0.0), (7, 0.0), (0, 0.3), (0, 0.9), (7, 0.5), (25, 0.95),
                                          (63, 0.99), (64, 0.0), (100, 1.0)])
def test_fast_sampler_keeps_the_reference_filter_s_sets(top_k, top_p):
    logits = torch.randn(40, 64, generator=torch.Generator().manual_seed(1)) * 2
    assert torch.equal(kept_by_fast_path(logits, top_k, top_p), torch.isfinite(filter_logits(logits, top_k, top_p)))


def test_a_tie_at_the_k_th_logit_keeps_every_tied_token_as_the_reference_does():
    logits = torch.tensor([[3.0, 2.0, 1.0, 1.0, 1.0, 0.0]])
    assert kept_by_fast_path(logits, 3, 0.0).tolist() == [[True] * 5 + [False]]
    ids = sample_logits(logits.expand(6000, -1), 1.0, 3, 0.0, torch.Generator().manual_seed(0))
    probs = reference_probs(logits, 1.0, 3, 0.0)[0]
    assert set(ids.unique().tolist()) == {0, 1, 2, 3, 4}
    assert 0.5 * (frequencies(ids, 6) - probs).abs().sum() < tv_tolerance(probs, 6000)


@pytest.mark.parametrize("top_k, top_p, temperature", [(0, 0.0, 1.0), (12, 0.0, 1.0), (0, 0.8, 1.0),
                                                       (12, 0.7, 0.7), (40, 0.96, 1.5)])
def test_fast_sampler_draws_the_reference_distribution(top_k, top_p, temperature):
    """Token frequencies of 20,000 draws on fixed logits: the fast sampler and the reference one (filter +
    multinomial) are each within the TV tolerance of the exact filtered distribution, and of each other."""
    v, n = 50, 20_000
    logits = torch.randn(1, v, generator=torch.Generator().manual_seed(2)) * 1.5
    probs = reference_probs(logits, temperature, top_k, top_p)[0].double()
    fast = sample_logits(logits.expand(n, -1), temperature, top_k, top_p, torch.Generator().manual_seed(3))
    ref = reference_sample(logits.expand(n, -1), temperature, top_k, top_p, torch.Generator().manual_seed(4))
    tol = tv_tolerance(probs, n)
    assert (probs[fast.unique()] > 0).all()  # never a filtered-out token
    assert 0.5 * (frequencies(fast, v) - probs).abs().sum() < tol
    assert 0.5 * (frequencies(ref, v) - probs).abs().sum() < tol
    assert 0.5 * (frequencies(fast, v) - frequencies(ref, v)).abs().sum() < 2 * tol


def test_fast_sampler_is_exact_where_the_definition_fixes_the_token():
    logits = torch.randn(4, 9, 300, generator=torch.Generator().manual_seed(5))
    greedy = logits.argmax(-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_logits(logits, 1.0, 1, 0.0, g), greedy)  # top-k 1
    assert torch.equal(sample_logits(logits, 0.0, 50, 0.9, g), greedy)  # temperature 0
    assert torch.equal(sample_logits(logits, 1.0, 0, 1e-6, g), greedy)  # top-p keeps only the most likely token
    assert torch.equal(sample_logits(logits, 1.0, 50, 1e-6, g), greedy)
    degenerate = torch.full((3, 300), -1e4).index_put_((torch.arange(3), torch.tensor([7, 0, 299])), torch.tensor(9.0))
    for top_k, top_p in ((0, 0.0), (0, 0.9), (20, 0.0), (20, 0.9)):
        assert sample_logits(degenerate, 1.0, top_k, top_p, g).tolist() == [7, 0, 299]


def test_fast_sampler_is_seeded_and_shaped():
    logits = torch.randn(2, 5, 100)
    a = sample_logits(logits, 1.0, 10, 0.9, torch.Generator().manual_seed(0))
    b = sample_logits(logits, 1.0, 10, 0.9, torch.Generator().manual_seed(0))
    assert a.shape == (2, 5) and a.dtype == torch.long and torch.equal(a, b)


def test_fast_sampler_uses_no_full_sort_and_no_multinomial_with_top_k(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the top-k path must not sort the vocabulary or call multinomial")

    logits = torch.randn(3, 4096)
    monkeypatch.setattr(torch.Tensor, "sort", refuse)
    monkeypatch.setattr(torch, "sort", refuse)
    monkeypatch.setattr(torch, "multinomial", refuse)
    monkeypatch.setattr(torch.Tensor, "exponential_", refuse)
    assert sample_logits(logits, 1.0, 900, 0.96, torch.Generator().manual_seed(0)).shape == (3,)

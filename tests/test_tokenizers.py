"""Tokenizer invariants: round trips, the msvq residual loop, straight-through gradients, overfitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genarena.tokenizers import build_tokenizer
from genarena.tokenizers.codebook import Codebook
from genarena.tokenizers.msvq import MultiScaleResidualQuantizer

from .conftest import TOKENIZER_CFGS


def make(name: str, **over):
    torch.manual_seed(0)
    return build_tokenizer({**TOKENIZER_CFGS[name], **over}, image_channels=1, resolution=32)


def images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 32, 32, generator=g) * 2 - 1


@pytest.mark.parametrize("name,shape,dtype", [("vq", (4, 64), torch.long), ("msvq", (4, 85), torch.long),
                                              ("kl", (4, 64, 4), torch.float32)])
def test_round_trip_shapes_and_ranges(name, shape, dtype):
    tok = make(name).eval()
    tokens = tok.encode(images())
    assert tokens.shape == shape and tokens.dtype == dtype
    assert tok.seq_len == shape[1] and tok.grid == (8, 8)
    if dtype == torch.long:
        assert 0 <= tokens.min() and tokens.max() < tok.vocab_size
    out = tok.decode(tokens)
    assert out.shape == (4, 1, 32, 32) and out.min() >= -1 and out.max() <= 1
    recon, aux = tok(images())
    assert recon.shape == (4, 1, 32, 32) and aux["loss"].ndim == 0


def test_training_indices_equal_encode_indices():
    tok = make("msvq").eval()
    _, aux = tok(images())
    assert torch.equal(aux["indices"], tok.encode(images()))


def hand_quantizer() -> MultiScaleResidualQuantizer:
    """Scales 1 and 2 over a 2x2 map of 1-d features, codes -1, 0, 1, 2, phi the identity (quant_resi 0)."""
    q = MultiScaleResidualQuantizer(4, 1, [1, 2], 0.0, 4, 0.25, False, 0.0, 1.0, 0.0, 0.99, "none")
    q.codebook.embedding.weight.data = torch.tensor([[-1.0], [0.0], [1.0], [2.0]])
    return q


def test_msvq_residual_loop_by_hand():
    """f = [[0.9, 1.1], [2.0, 1.6]]. Scale 1: mean 1.4 -> code 1.0 (index 2), f_hat = 1 everywhere.
    Scale 2: residuals [[-0.1, 0.1], [1.0, 0.6]] -> codes [[0, 0], [1, 1]] (indices [[1, 1], [2, 2]]),
    f_hat = [[1, 1], [2, 2]]. VQ loss: (1 + beta) * mean over scales of mse(f_hat_k, f)
    = 1.25 * (0.345 + 0.045) / 2 = 0.24375. Teacher-forcing input of scale 2: area_down(f_hat_1) = 1.
    (VAR's own outputs at a random configuration pin the rest: tests/test_official_tokenizers.py.)"""
    q = hand_quantizer().eval()
    f = torch.tensor([[[[0.9, 1.1], [2.0, 1.6]]]])
    indices = q.lookup_all(f)
    assert indices[0].tolist() == [[[2]]] and indices[1].tolist() == [[[1, 1], [2, 2]]]
    torch.testing.assert_close(q.f_hat_from_indices(indices), torch.tensor([[[[1.0, 1.0], [2.0, 2.0]]]]))
    torch.testing.assert_close(q.f_hat_from_indices(indices, upto=1), torch.ones(1, 1, 2, 2))
    torch.testing.assert_close(q.teacher_forcing_inputs(indices), torch.ones(1, 4, 1))
    q.train()
    f_hat, train_indices, aux = q(f)
    assert [i.tolist() for i in train_indices] == [i.tolist() for i in indices]
    torch.testing.assert_close(f_hat, torch.tensor([[[[1.0, 1.0], [2.0, 2.0]]]]))
    torch.testing.assert_close(aux["vq_loss"], torch.tensor(0.24375))


@pytest.mark.parametrize("name", ["vq", "msvq"])
def test_straight_through_gradients_reach_the_encoder(name):
    tok = make(name).train()
    recon, aux = tok(images())
    recon.pow(2).mean().backward()  # reconstruction only: no commitment term
    grads = [p.grad for p in tok.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_codebook_restarts_dead_codes_from_candidates():
    cb = Codebook(16, 4, 0.25, False, 0.0, 1.0, dead_code_threshold=0.5, usage_decay=0.0)
    z = torch.randn(1, 4, 4, 4) + 5.0  # far from the tiny initial codes: a few codes take every assignment
    cb.train()
    cb.quantize(z)
    assert (cb.usage[0] < 0.5).sum() >= 12
    restarted = cb.restart_dead_codes(z.permute(0, 2, 3, 1).reshape(-1, 4))
    assert restarted >= 12
    assert (cb.embedding.weight - 5.0).abs().mean() < 3.0  # moved next to the encoder outputs


def test_kl_tokens_are_the_scaled_latent_in_raster_order():
    """token[b, i * w + j, c] = scale_factor * latent[b, c, i, j]; a measured std sets scale_factor = 1 / std,
    a configured scale_factor stays."""
    tok = make("kl").eval()
    latent = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).view(2, 4, 8, 8)
    tok.set_scale_factor(4.0)  # scale_factor None in the config: measured
    tokens = tok.to_tokens(latent)
    assert tokens.shape == (2, 64, 4)
    assert tokens[1, 3 * 8 + 5, 2].item() == 0.25 * latent[1, 2, 3, 5].item() == 0.25 * (256 + 128 + 29)
    fixed = make("kl", scale_factor=0.2325).eval()
    fixed.set_scale_factor(4.0)
    assert fixed.scale_factor.item() == pytest.approx(0.2325)


@pytest.mark.parametrize("name", ["vq", "msvq", "kl"])
def test_each_tokenizer_overfits_a_fixed_batch_of_64(name):
    from omegaconf import OmegaConf

    from genarena.data import load_source

    splits = load_source(OmegaConf.create(dict(name="mnist5k", root=None, download=False, resolution=32, channels=1,
                                               batch_size=64, num_workers=0, val_fraction=0.1, split_seed=0,
                                               hflip=False)))
    x = torch.stack([splits.train[i][0] for i in range(64)])
    tok = make(name, ch=16).train()
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    first = None
    for _step in range(120):
        recon, aux = tok(x)
        rec = F.mse_loss(recon, x)
        loss = rec + aux["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = rec.item() if first is None else first
    tok.eval()
    final = F.mse_loss(tok.decode(tok.encode(x)), x).item()
    assert final < 0.35 * first, (first, final)


@pytest.mark.parametrize("mode", ["standardize", "whiten"])
def test_scale_norm_maps_each_scale_into_codebook_space_and_back(mode):
    q = MultiScaleResidualQuantizer(16, 4, [1, 2], 0.5, 1, 0.25, False, 0.0, 1.0, 0.05, 0.0, mode)
    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[2.0, 0, 0, 0], [1.5, 0.5, 0, 0], [0, 0, 3, 0], [0, 0, 1, 0.2]])
    r = (torch.randn(512, 4, generator=g) @ mix + 5).view(128, 2, 2, 4).permute(0, 3, 1, 2)  # correlated
    q.train()
    z = q.standardize(1, r)  # usage_decay 0: the statistics are this batch's
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    cov = torch.cov(flat.T)
    assert flat.mean(0).abs().max() < 1e-4
    if mode == "whiten":
        assert torch.allclose(cov, torch.eye(4), atol=1e-3)
    else:
        assert torch.allclose(cov.diagonal(), torch.ones(4), atol=1e-3) and cov[0, 1].abs() > 0.3
    q.eval()
    codes = torch.randint(0, 16, (3, 2, 2))
    e = q.codebook.embed(codes)
    back = q.standardize(1, q.code_vectors(1, codes))  # code_vectors inverts the map
    assert torch.allclose(back, e, atol=1e-3)

"""Official tokenizers: converters (genarena.official) against golden fixtures of the official code, msvq's fixes.

The fixtures under ``tests/fixtures/official/`` were made by ``make_*.py`` there, which run the official
repositories' models (VAR's VQVAE, MAR's KL-16, LlamaGen's VQ-16) at tiny random configurations.
"""

from __future__ import annotations

import pytest
import torch

from genarena.errors import CheckpointError
from genarena.official.var_vqvae import convert_var_quantizer
from genarena.tokenizers.msvq import MultiScaleResidualQuantizer, phi_indices

# ------------------------------------------------------------------------------ msvq: phi convs
# expected lists printed by VAR's PhiPartiallyShared / PhiNonShared (models/quant.py) for scale si of K at si/(K-1)
OFFICIAL_PHI_INDICES = {
    (10, 2): [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    (10, 3): [0, 0, 0, 0, 1, 1, 1, 2, 2, 2],
    (10, 4): [0, 0, 1, 1, 1, 2, 2, 3, 3, 3],
    (10, 6): [0, 0, 1, 1, 2, 3, 3, 4, 5, 5],
    (10, 0): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    (6, 3): [0, 0, 1, 1, 2, 2],
    (6, 4): [0, 0, 1, 2, 3, 3],
    (6, 6): [0, 1, 2, 3, 4, 5],
    (6, 0): [0, 1, 2, 3, 4, 5],
}


@pytest.mark.parametrize("scales,convs", list(OFFICIAL_PHI_INDICES))
def test_phi_indices_follow_var(scales, convs):
    assert phi_indices(scales, convs) == OFFICIAL_PHI_INDICES[scales, convs]


def test_phi_indices_of_one_scale_and_one_conv():
    assert phi_indices(1, 4) == [0]
    assert phi_indices(5, 1) == [0] * 5


def quantizer(share: int, quant_resi: float = 0.5, patch_nums=(1, 2, 3, 4)) -> MultiScaleResidualQuantizer:
    torch.manual_seed(0)
    return MultiScaleResidualQuantizer(16, 4, list(patch_nums), quant_resi, share, 0.25, False, 0.0, 1.0, 0.0,
                                       0.99, "none")


def test_share_quant_resi_0_gives_one_phi_per_scale():
    q = quantizer(0).eval()
    assert len(q.phis) == 4 and q.phi_of_scale == [0, 1, 2, 3]
    f = torch.randn(2, 4, 4, 4)
    idx = q.lookup_all(f)
    # each scale's contribution goes through its own conv: h_k = phi_k(up(e_k))
    for k, i in enumerate(idx):
        e = torch.nn.functional.interpolate(q.codebook.embed(i), size=(4, 4), mode="bicubic") if k < 3 \
            else q.codebook.embed(i)
        torch.testing.assert_close(q.scale_contribution(k, i), 0.5 * e + 0.5 * q.phis[k].conv(e))


def test_quant_resi_0_makes_phi_the_identity():
    q = quantizer(4, quant_resi=0.0)
    assert not any(k.startswith("phis.") for k in q.state_dict())
    idx = torch.randint(0, 16, (2, 4, 4))
    torch.testing.assert_close(q.scale_contribution(3, idx), q.codebook.embed(idx))


# ------------------------------------------------------------------------------ VAR quantizer converter
def phi_prefix(share: int) -> str:
    """VectorQuantizer2's phi keys: PhiNonShared (0), PhiShared (1), PhiPartiallyShared (n)."""
    return {0: "quantize.quant_resi.{i}", 1: "quantize.quant_resi.qresi"}.get(share, "quantize.quant_resi.qresi_ls.{i}")


def var_quantize_state_dict(share: int, dim: int = 4, vocab: int = 16, scales: int = 4) -> dict[str, torch.Tensor]:
    """The ``quantize.*`` keys of a VAR VQVAE with ``share_quant_resi=share`` (VectorQuantizer2's layout)."""
    g = torch.Generator().manual_seed(share)
    sd = {"quantize.embedding.weight": torch.randn(vocab, dim, generator=g),
          "quantize.ema_vocab_hit_SV": torch.zeros(scales, vocab)}
    prefix = phi_prefix(share)
    for i in range({0: scales, 1: 1}.get(share, share)):
        sd[prefix.format(i=i) + ".weight"] = torch.randn(dim, dim, 3, 3, generator=g)
        sd[prefix.format(i=i) + ".bias"] = torch.randn(dim, generator=g)
    return sd


@pytest.mark.parametrize("share", [0, 1, 3, 4])
def test_convert_var_quantizer_maps_every_phi_layout(share):
    sd = var_quantize_state_dict(share)
    kwargs, converted = convert_var_quantizer({**sd, "encoder.conv_in.weight": torch.zeros(1)}, patch_nums=(1, 2, 3, 4))
    assert kwargs["share_quant_resi"] == share and kwargs["scale_norm"] == "none" and kwargs["vocab_size"] == 16
    q = MultiScaleResidualQuantizer(**kwargs)
    q.load_state_dict(converted)  # strict
    assert torch.equal(q.codebook.embedding.weight, sd["quantize.embedding.weight"])
    src = phi_prefix(share)
    for i, phi in enumerate(q.phis):
        assert torch.equal(phi.conv.weight, sd[src.format(i=i) + ".weight"])


def test_convert_var_quantizer_names_every_bad_key_in_one_line():
    sd = var_quantize_state_dict(4)
    del sd["quantize.quant_resi.qresi_ls.2.bias"]
    sd["quantize.extra"] = torch.zeros(1)
    sd["quantize.embedding.weight"] = torch.zeros(16, 5)
    with pytest.raises(CheckpointError) as e:
        convert_var_quantizer(sd, patch_nums=(1, 2, 3, 4))
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing keys (1): quantize.quant_resi.qresi_ls.2.bias" in msg
    assert "unexpected keys (1): quantize.extra" in msg
    assert "quantize.quant_resi.qresi_ls.0.weight (4, 4, 3, 3) != (5, 5, 3, 3)" in msg


def test_convert_var_quantizer_checks_the_number_of_scales():
    with pytest.raises(CheckpointError, match=r"quantize.ema_vocab_hit_SV \(4, 16\) != \(10, 16\)"):
        convert_var_quantizer(var_quantize_state_dict(4))  # VAR's 10 scales by default

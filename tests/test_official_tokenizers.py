"""Official tokenizers: converters (genarena.official) against golden fixtures of the official code, msvq's fixes.

The fixtures under ``tests/fixtures/official/`` were made by ``make_*.py`` there, which run the official
repositories' models (VAR's VQVAE, MAR's KL-16, LlamaGen's VQ-16) at tiny random configurations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genarena.config import validate
from genarena.errors import CheckpointError, ConfigError
from genarena.official.llamagen_vq import convert_llamagen_vq, load_official_llamagen_vq
from genarena.official.mar_kl import convert_mar_kl, load_official_mar_kl
from genarena.official.presets import tokenizer_preset
from genarena.official.var_vqvae import convert_var_quantizer, convert_var_vqvae, load_official_var_vqvae
from genarena.tokenizers import build_tokenizer
from genarena.tokenizers.msvq import MultiScaleResidualQuantizer, phi_indices

from .conftest import compose_cfg

# ------------------------------------------------------------------------------ msvq: phi convs
# expected lists printed by VAR's PhiPartiallyShared / PhiNonShared (models/quant.py) for scale si of K at si/(K-1)
OFFICIAL_PHI_INDICES = {
    (10, 2): [0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    (10, 3): [0, 0, 0, 0, 1, 1, 1, 2, 2, 2],
    (10, 4): [0, 0, 1, 1, 1, 2, 2, 3, 3, 3],
    (10, 6): [0, 0, 1, 1, 2, 3, 3, 4, 5, 5],
    (10, 0): [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    (6, 3): [0, 0, 1, 1, 2, 2],
    (6, 5): [0, 0, 1, 2, 3, 4],
    (7, 3): [0, 0, 0, 1, 1, 2, 2],
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


# ------------------------------------------------------------------------------ golden fixtures
FIXTURES = Path(__file__).parent / "fixtures" / "official"
CONVERTERS = {"var_vqvae": convert_var_vqvae, "mar_kl": convert_mar_kl, "llamagen_vq": convert_llamagen_vq}
PRESETS = {"var_vqvae": "var_vqvae", "mar_kl": "mar_kl16", "llamagen_vq": "llamagen_vq16"}
TOL = dict(atol=1e-5, rtol=1e-5)


def load_fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def float_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fixture state dicts are stored in float16 (their values are float16-exact; see the make scripts)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def convert_fixture(name: str, fixture: dict) -> tuple[dict, dict]:
    sd = float_state_dict(fixture["state_dict"])
    c = fixture["config"]
    if name == "var_vqvae":
        return convert_var_vqvae(sd, patch_nums=c["patch_nums"], quant_resi=c["quant_resi"])
    return CONVERTERS[name](sd)


def tokenizer_from_fixture(name: str):
    """The genarena tokenizer built from the converted config, with the converted weights (strict)."""
    fixture = load_fixture(name)
    cfg, sd = convert_fixture(name, fixture)
    assert cfg["ldm"]["norm_groups"] == 32  # the official models'; the fixtures were built with fewer groups
    cfg["ldm"]["norm_groups"] = fixture["config"]["norm_groups"]
    tok = build_tokenizer(cfg, image_channels=3, resolution=fixture["config"]["image_size"]).eval()
    tok.load_state_dict(sd)
    return tok, fixture


@torch.no_grad()
def test_var_vqvae_reproduces_the_official_indices_and_reconstructions():
    tok, fx = tokenizer_from_fixture("var_vqvae")
    x = fx["images"].float()
    torch.testing.assert_close(tok.encode_features(x), fx["features"], **TOL)
    tokens = tok.encode(x)
    indices = tok.split_scales(tokens)
    assert len(indices) == len(fx["indices"]) == 6
    for k, (ours, theirs) in enumerate(zip(indices, fx["indices"])):
        assert torch.equal(ours.flatten(1), theirs), f"scale {k}"  # (B, pn*pn) in raster order, as img_to_idxBl
    torch.testing.assert_close(tok.quantizer.f_hat_from_indices(indices), fx["f_hat"], **TOL)
    torch.testing.assert_close(tok.decode(tokens), fx["recon_from_indices"], **TOL)
    torch.testing.assert_close(tok.decode_f_hat(fx["f_hat"]), fx["recon_from_f_hat"], **TOL)


@torch.no_grad()
def test_var_vqvae_teacher_forcing_and_sampling_inputs_match_var():
    tok, fx = tokenizer_from_fixture("var_vqvae")
    q = tok.quantizer
    indices = [i.view(-1, p, p) for i, p in zip(fx["indices"], q.patch_nums)]
    torch.testing.assert_close(q.teacher_forcing_inputs(indices), fx["teacher_forcing"], **TOL)
    f_hat, steps = None, []
    for k, idx in enumerate(indices):  # the sampling path builds the same inputs one scale at a time
        f_hat, nxt = q.next_scale_input(k, f_hat, idx)
        steps.append(nxt)
    assert steps[-1] is None
    torch.testing.assert_close(torch.cat(steps[:-1], dim=1), fx["teacher_forcing"], **TOL)


def test_var_vqvae_training_vq_loss_matches_var():
    tok, fx = tokenizer_from_fixture("var_vqvae")
    tok.train()
    f = fx["features"].clone().requires_grad_(True)
    f_hat, indices, aux = tok.quantizer(f)
    torch.testing.assert_close(aux["vq_loss"], fx["train_vq_loss"], **TOL)
    torch.testing.assert_close(f_hat, fx["f_hat"], **TOL)  # straight-through: the value of f_hat
    assert all(torch.equal(i.flatten(1), j) for i, j in zip(indices, fx["indices"]))


@pytest.mark.parametrize("share", [0, 5])
@torch.no_grad()
def test_var_quantizer_variants_match_var(share):
    fx = load_fixture("var_vqvae")
    variant = fx["quantizer_variants"][share]
    kwargs, sd = convert_var_quantizer(float_state_dict(variant["state_dict"]), patch_nums=fx["config"]["patch_nums"])
    assert kwargs["share_quant_resi"] == share
    q = MultiScaleResidualQuantizer(**kwargs).eval()
    q.load_state_dict(sd)
    indices = q.lookup_all(fx["features"])
    assert all(torch.equal(i.flatten(1), j) for i, j in zip(indices, variant["indices"]))
    torch.testing.assert_close(q.f_hat_from_indices(indices), variant["f_hat"], **TOL)


@torch.no_grad()
def test_mar_kl_reproduces_the_official_posterior_and_decoder():
    tok, fx = tokenizer_from_fixture("mar_kl")
    x = fx["images"].float()
    mean, std = tok.posterior(x)
    torch.testing.assert_close(mean, fx["posterior_mean"], **TOL)
    torch.testing.assert_close(std, fx["posterior_std"], **TOL)
    z = fx["latents"].float()
    torch.testing.assert_close(tok.decode_features(z), fx["decoded_latents"], **TOL)
    # tokens: MAR's 0.2325 * latent as (B, h*w, C) in raster order; decode divides it back out and clamps
    tokens = tok.encode(x)
    b, c, h, w = fx["posterior_mean"].shape
    assert tokens.shape == (b, h * w, c)
    torch.testing.assert_close(tokens[:, 1 * w + 2], 0.2325 * fx["posterior_mean"][:, :, 1, 2], **TOL)
    torch.testing.assert_close(tok.decode(tokens), fx["recon_from_mean"].clamp(-1, 1), **TOL)


@torch.no_grad()
def test_llamagen_vq_reproduces_the_official_indices_and_reconstruction():
    tok, fx = tokenizer_from_fixture("llamagen_vq")
    x = fx["images"].float()
    torch.testing.assert_close(tok.encode_features(x), fx["features"], **TOL)
    tokens = tok.encode(x)
    assert torch.equal(tokens, fx["indices"])
    h, w = tok.grid
    torch.testing.assert_close(tok.codebook.embed(tokens.view(-1, h, w)), fx["quantized"], **TOL)
    torch.testing.assert_close(tok.decode(tokens), fx["recon_from_indices"].clamp(-1, 1), **TOL)


# ------------------------------------------------------------------------------ the released models' layouts
@pytest.mark.parametrize("name", list(CONVERTERS))
def test_released_layout_converts_to_the_preset(name):
    """The keys and shapes of the released full-size file (recorded from the official classes) convert to
    exactly the preset's architecture and to every key and shape of genarena's tokenizer built from it."""
    full = {k: torch.empty(shape, device="meta") for k, shape in load_fixture(name)["full_shapes"].items()}
    cfg, sd = CONVERTERS[name](full)
    preset = tokenizer_preset(PRESETS[name])
    assert cfg == preset
    with torch.device("meta"):
        tok = build_tokenizer(cfg, image_channels=3, resolution=256)
    assert {k: tuple(v.shape) for k, v in tok.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}


def test_released_presets_describe_the_official_token_layouts():
    facts = {}
    for name in ("var_vqvae", "mar_kl16", "llamagen_vq16"):
        with torch.device("meta"):
            facts[name] = build_tokenizer(tokenizer_preset(name), image_channels=3, resolution=256).describe()
    assert facts["var_vqvae"]["seq_len"] == 680 and facts["var_vqvae"]["vocab_size"] == 4096
    assert facts["var_vqvae"]["scales"] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16] and facts["var_vqvae"]["token_dim"] == 32
    assert facts["mar_kl16"]["grid"] == [16, 16] and facts["mar_kl16"]["token_dim"] == 16
    assert facts["llamagen_vq16"]["seq_len"] == 256 and facts["llamagen_vq16"]["vocab_size"] == 16384


# ------------------------------------------------------------------------------ strictness
@pytest.mark.parametrize("name", list(CONVERTERS))
def test_a_truncated_state_dict_is_one_error_naming_the_keys(name):
    fixture = load_fixture(name)
    sd = float_state_dict(fixture["state_dict"])
    removed = list(sd)[len(sd) // 2:]  # truncated: the second half of the file is gone
    for k in removed:
        del sd[k]
    with pytest.raises(CheckpointError) as e:
        convert_fixture(name, {**fixture, "state_dict": sd})
    msg = str(e.value)
    assert "\n" not in msg and "unexpected" not in msg and "mis-shaped" not in msg
    assert f"missing keys ({len(removed)}): " in msg
    listed = msg.split(": ", 2)[2].split(", ... and")[0].split(", ")
    assert len(listed) == 12 and set(listed) <= set(removed), msg


@pytest.mark.parametrize("name", list(CONVERTERS))
def test_a_wrong_key_and_a_wrong_shape_are_named_together(name):
    fixture = load_fixture(name)
    sd = float_state_dict(fixture["state_dict"])
    renamed = "decoder.conv_out.weight"
    sd["decoder.conv_out.weights"] = sd.pop(renamed)
    sd["decoder.norm_out.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        convert_fixture(name, {**fixture, "state_dict": sd})
    msg = str(e.value)
    assert "\n" not in msg
    assert f"missing keys (1): {renamed}" in msg
    assert "unexpected keys (1): decoder.conv_out.weights" in msg
    assert "mis-shaped keys (1): decoder.norm_out.bias (3,) != (8,)" in msg


def test_llamagen_names_its_own_keys_in_errors():
    fixture = load_fixture("llamagen_vq")
    sd = float_state_dict(fixture["state_dict"])
    del sd["decoder.conv_blocks.0.res.1.conv2.bias"]  # the lowest level's last block (LDM: decoder.up.1.block.1)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): decoder\.conv_blocks\.0\.res\.1\.conv2\.bias$"):
        convert_llamagen_vq(sd)


# ------------------------------------------------------------------------------ released file layouts
def write_released(tmp_path: Path, name: str) -> Path:
    """The fixture's weights in the layout of the released file (VAR: the state dict; MAR and LlamaGen: under
    "model"; LlamaGen's training checkpoints also pickle their argparse arguments)."""
    sd = float_state_dict(load_fixture(name)["state_dict"])
    obj = {"var_vqvae": sd, "mar_kl": {"model": sd},
           "llamagen_vq": {"model": sd, "steps": 1, "args": argparse.Namespace(vq_model="VQ-16")}}[name]
    path = tmp_path / f"{name}.pt"
    torch.save(obj, path)
    return path


LOADERS = {"var_vqvae": load_official_var_vqvae, "mar_kl": load_official_mar_kl,
           "llamagen_vq": load_official_llamagen_vq}


@pytest.mark.parametrize("name", list(LOADERS))
def test_released_files_load_with_weights_only(tmp_path, name):
    path = write_released(tmp_path, name)
    fixture = load_fixture(name)
    kwargs = {"patch_nums": fixture["config"]["patch_nums"]} if name == "var_vqvae" else {}
    cfg, sd = LOADERS[name](path, **kwargs)
    ref_cfg, ref_sd = convert_fixture(name, fixture)
    assert cfg == ref_cfg and sd.keys() == ref_sd.keys() and all(torch.equal(sd[k], ref_sd[k]) for k in sd)


def test_released_file_problems_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_official_mar_kl(tmp_path / "kl16.ckpt")
    bad = tmp_path / "garbage.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read with weights_only=True"):
        load_official_mar_kl(bad)
    plain = write_released(tmp_path, "var_vqvae")  # a plain state dict where MAR keeps it under "model"
    with pytest.raises(CheckpointError, match="has no 'model' entry"):
        load_official_mar_kl(plain)


# ------------------------------------------------------------------------------ start-up validation
@pytest.mark.parametrize("override,named", [
    ("tokenizer.share_quant_resi=7", "tokenizer.share_quant_resi=7"),
    ("tokenizer.share_quant_resi=-1", "tokenizer.share_quant_resi=-1"),
    ("tokenizer.quant_resi=1.5", "tokenizer.quant_resi=1.5"),
    ("tokenizer.quant_resi=-0.5", "tokenizer.quant_resi=-0.5"),
    ("tokenizer.patch_nums=[0,2,8]", "tokenizer.patch_nums=[0, 2, 8]"),
    ("tokenizer.patch_nums=[1,4,2,8]", "tokenizer.patch_nums=[1, 4, 2, 8]"),
    ("tokenizer.scale_norm=pca", "tokenizer.scale_norm='pca'"),
    ("tokenizer.vocab_size=1", "tokenizer.vocab_size=1"),
    ("tokenizer.beta=-1", "tokenizer.beta=-1.0"),
    ("tokenizer.entropy_temperature=0", "tokenizer.entropy_temperature=0.0"),
    ("tokenizer.usage_decay=1.0", "tokenizer.usage_decay=1.0"),
    ("tokenizer.dead_code_threshold=-0.1", "tokenizer.dead_code_threshold=-0.1"),
    ("tokenizer.net=vqgan", "tokenizer.net='vqgan'"),
    ("tokenizer.ldm.embed_dim=4", "tokenizer.ldm.embed_dim=4 needs tokenizer.net=ldm"),
])
def test_bad_msvq_values_stop_at_start_up(override, named):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(["tokenizer=msvq", override]))
    assert named in str(e.value)


@pytest.mark.parametrize("overrides,named", [
    (["tokenizer.net=ldm", "tokenizer.ldm.norm_groups=32"], "tokenizer.ldm.norm_groups=32"),
    (["tokenizer.net=ldm", "tokenizer.ldm.quant_conv_kernel=2"], "tokenizer.ldm.quant_conv_kernel=2"),
    (["tokenizer=kl", "tokenizer.scale_factor=0"], "tokenizer.scale_factor=0.0"),
    (["tokenizer=var_vqvae"], "must increase strictly and end at the latent grid side 2"),  # 32 px: a 2x2 grid
])
def test_bad_tokenizer_values_stop_at_start_up(overrides, named):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(overrides))
    assert named in str(e.value)


@pytest.mark.parametrize("preset", ["var_vqvae", "mar_kl16", "llamagen_vq16"])
def test_official_presets_validate_at_256_px(preset):
    validate(compose_cfg([f"tokenizer={preset}", "data.resolution=256", "data.channels=3"]))


@pytest.mark.parametrize("name", ["vq", "msvq", "kl"])
def test_each_default_tokenizer_runs_on_the_ldm_net(name):
    """``tokenizer.net=ldm`` at the default (toy) widths: the LDM encoder/decoder with quant convs trains."""
    cfg = compose_cfg([f"tokenizer={name}", "tokenizer.net=ldm", "tokenizer.share_quant_resi=0"
                       if name == "msvq" else "tokenizer.ldm.embed_dim=8"])
    validate(cfg)
    torch.manual_seed(0)
    tok = build_tokenizer(OmegaConf.to_container(cfg.tokenizer), image_channels=1, resolution=32).train()
    assert isinstance(tok.quant_conv, torch.nn.Conv2d) and tok.net == "ldm"
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    recon, aux = tok(x)
    (recon.pow(2).mean() + aux["loss"]).backward()
    assert recon.shape == x.shape and tok.encoder.conv_in.weight.grad.abs().sum() > 0
    if name == "msvq":
        assert len(tok.quantizer.phis) == len(tok.scales)  # share_quant_resi=0: one phi per scale
    else:
        assert tok.code_dim == 8 and tok.token_dim == (8 if name == "kl" else None)

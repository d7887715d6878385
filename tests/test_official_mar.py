"""MAR against the official code (LTH14/mar): the converter, and genarena's ``mar`` with ``backbone=vit`` and
``diffusion_loss=learned_sigma`` reproducing the golden fixture.

``tests/fixtures/official/mar.pt`` was made by ``make_mar.py`` there, which runs the official ``MAR`` (timm ViT
blocks, ``DiffLoss`` with learned variance, improved DDPM's diffusion) at a tiny random configuration: 4x4 tokens of
16 dims, width 32, 2 + 2 blocks, a buffer of 4, a 2-block denoiser, 10 sampling steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genarena.config import MARGeneratorConfig, validate
from genarena.errors import CheckpointError, ConfigError
from genarena.generators import MAR, build_generator
from genarena.generators.diffusion import respace
from genarena.official.mar_model import convert_mar, load_official_mar
from genarena.tokenizers import build_tokenizer

from .conftest import compose_cfg, tiny_generator, token_batch

FIXTURE = Path(__file__).parent / "fixtures" / "official" / "mar.pt"
TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def official() -> dict:
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


def continuous_tokenizer(grid: int, token_dim: int):
    """A KL tokenizer with a ``grid x grid`` map of ``token_dim``-dim tokens (its weights do not matter here)."""
    cfg = {"name": "kl", "ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "z_channels": token_dim,
           "kl_weight": 1e-4, "scale_factor": None}
    return build_tokenizer(cfg, image_channels=1, resolution=4 * grid)


def converted_mar(official: dict, **over) -> MAR:
    """genarena's MAR built from the converted config (with ``over``) and loaded strictly with the converted weights."""
    cfg, sd = convert_mar(official["state_dict"], heads=official["config"]["encoder_num_heads"])
    tok = continuous_tokenizer(4, official["config"]["vae_embed_dim"])
    gen = build_generator({**cfg, **over}, tok, num_classes=cfg_classes(sd))
    gen.load_state_dict(sd, strict=True)
    return gen.eval()


def cfg_classes(sd: dict) -> int:
    return sd["class_embed.weight"].shape[0] - 1  # the last row is the null class (MAR's fake latent)


@pytest.fixture(scope="module")
def mar(official) -> MAR:
    return converted_mar(official)


# ------------------------------------------------------------------------------ the converter
def test_converted_config_is_a_valid_official_mar_config(official):
    cfg, sd = convert_mar(official["state_dict"], heads=2)
    OmegaConf.merge(OmegaConf.structured(MARGeneratorConfig), cfg)  # every key typed, none missing or unknown
    c = official["config"]
    assert (cfg["backbone"], cfg["diffusion_loss"], cfg["order"], cfg["qk_norm"]) == ("vit", "learned_sigma",
                                                                                     "random", False)
    assert (cfg["width"], cfg["heads"], cfg["encoder_depth"], cfg["decoder_depth"], cfg["buffer_size"]) == (
        c["encoder_embed_dim"], 2, c["encoder_depth"], c["decoder_depth"], c["buffer_size"])
    assert (cfg["diffusion_width"], cfg["diffusion_depth"], cfg["mlp_ratio"]) == (c["diffloss_w"], c["diffloss_d"],
                                                                                  c["mlp_ratio"])
    assert (cfg["dropout"], cfg["class_dropout"], cfg["mask_ratio_min"]) == (
        c["proj_dropout"], c["label_drop_prob"], c["mask_ratio_min"])
    assert cfg_classes(sd) == c["class_num"]
    torch.testing.assert_close(sd["class_embed.weight"][-1:], official["state_dict"]["fake_latent"])


def test_released_widths_give_heads_and_reported_sampling():
    cfg, _ = convert_mar(tiny_official_state_dict(width=768))
    assert cfg["heads"] == 12  # MAR-B
    assert cfg["sampling"]["steps"] == 256 and cfg["sampling"]["cfg"] == pytest.approx(1.9)  # MAR's cfg 2.9
    with pytest.raises(CheckpointError, match="pass heads"):
        convert_mar(tiny_official_state_dict(width=40))


def tiny_official_state_dict(width: int) -> dict:
    """An official-layout state dict of width ``width`` (1 + 1 blocks, 2x2 tokens of 4 dims, buffer 2)."""
    from genarena.official.mar_model import mar_plan

    plan = mar_plan(width, 2 * width, 4, 6, 4, 3, 1, 1, 8, 1)
    return {k: torch.zeros(e.shape) for k, e in plan.items()}


def test_truncated_or_wrong_state_dicts_fail_with_one_message_naming_the_keys(official):
    sd = dict(official["state_dict"])
    del sd["decoder_blocks.1.mlp.fc2.bias"]
    sd["encoder_blocks.0.attn.extra"] = torch.zeros(3)
    sd["decoder_norm.weight"] = torch.zeros(31)
    with pytest.raises(CheckpointError) as e:
        convert_mar(sd, heads=2)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in ("missing keys (1): decoder_blocks.1.mlp.fc2.bias",
                   "unexpected keys (1): encoder_blocks.0.attn.extra",
                   "mis-shaped keys (1): decoder_norm.weight (31,) != (32,)"):
        assert needle in msg
    with pytest.raises(CheckpointError, match="missing keys .*class_emb.weight"):
        convert_mar({"pos_start": torch.zeros(1, 1, 32)})  # not a MAR state dict at all
    sd = dict(official["state_dict"], **{"class_emb.weight": torch.zeros(320)})
    with pytest.raises(CheckpointError, match="class_emb.weight .* is not 2-D"):
        convert_mar(sd, heads=2)


def test_load_official_mar_reads_the_training_checkpoint_with_weights_only(official, tmp_path):
    plain = official["state_dict"]
    ema = {k: v + 1 for k, v in plain.items()}
    path = tmp_path / "checkpoint-last.pth"
    # what main_mar.py saves (util/misc.py save_model), argparse arguments included
    torch.save({"model": plain, "model_ema": ema, "epoch": 799, "args": argparse.Namespace(model="mar_base")}, path)
    _, sd_ema = load_official_mar(path, heads=2)
    _, sd_plain = load_official_mar(path, ema=False, heads=2)
    torch.testing.assert_close(sd_ema["z_proj.weight"], ema["z_proj.weight"])
    torch.testing.assert_close(sd_plain["z_proj.weight"], plain["z_proj.weight"])
    path.write_bytes(path.read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_official_mar(path, heads=2)
    torch.save({"model": plain}, path)
    with pytest.raises(CheckpointError, match="model_ema"):
        load_official_mar(path, heads=2)


# ------------------------------------------------------------------------------ parity with the fixture
def test_encoder_and_decoder_reproduce_the_official_outputs(official, mar):
    m = official["mae"]
    with torch.no_grad():
        cond = mar.class_embed(m["labels"])  # label 3, and the null class (MAR's fake latent)
        encoded = mar.encode(m["tokens"], m["mask"], cond)
        z = mar.decode(encoded, m["mask"], cond)
    torch.testing.assert_close(encoded, m["encoded"], **TOL)
    torch.testing.assert_close(z, m["z"], **TOL)


def test_diffusion_loss_terms_and_gradient_reproduce_the_official_ones(official, mar):
    L = official["loss"]
    assert {0, 1, 999} <= set(L["t"].tolist())  # the decoder-NLL branch, the first KL step and the noisiest step
    mar.zero_grad()
    terms = mar.diffloss.terms(L["target"], L["cond"], L["t"], L["noise"])
    torch.testing.assert_close(terms["mse"], L["mse"], **TOL)
    torch.testing.assert_close(terms["vb"], L["vb"], **TOL)
    terms["loss"].backward()  # the VLB term sees eps detached: only the variance half gets its gradient
    torch.testing.assert_close(mar.diffloss.net.out.weight.grad, L["grad_out_weight"], **TOL)
    torch.testing.assert_close(mar.diffloss.net.out.bias.grad, L["grad_out_bias"], **TOL)
    mar.zero_grad()


def test_the_loss_reports_its_noise_prediction_part(official, mar):
    """``mse``, the eps-prediction part of the loss, compares across losses: all of ``eps``'s, ``learned_sigma``'s
    loss less its VLB term."""
    L = official["loss"]
    d = mar.diffloss
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out = d(L["target"], L["cond"])
        torch.manual_seed(0)  # the draws forward makes: a timestep and noise per repeated token
        x0, z = L["target"].repeat(d.batch_mul, 1), L["cond"].repeat(d.batch_mul, 1)
        t = torch.randint(0, d.timesteps, (x0.shape[0],))
        terms = d.terms(x0, z, t, torch.randn_like(x0))
    torch.testing.assert_close(out["mse"], terms["mse"].mean(), **TOL)
    torch.testing.assert_close(out["loss"] - out["mse"], terms["vb"].mean(), **TOL)
    gen, tok = tiny_generator("mar")  # the default loss: eps
    assert gen.diffloss.learn_sigma is False
    out = gen.loss(*token_batch(tok, n=4))
    assert out["loss"] == out["mse"]


def test_respacing_and_the_sampling_chain_are_the_official_ones(official, mar):
    P = official["p_sample"]
    for steps, timesteps in P["respacing"].items():
        assert respace(1000, steps) == timesteps.tolist()
    chain = mar.diffloss.chain(P["steps"], "cpu")
    assert chain.t.tolist() == P["timesteps"].tolist()
    ref = P["chain"]
    torch.testing.assert_close(chain.log_betas, ref["betas"].log(), **TOL)
    torch.testing.assert_close(chain.post_logvar, ref["posterior_log_variance_clipped"], **TOL)
    torch.testing.assert_close(chain.coef_x0, ref["posterior_mean_coef1"], **TOL)
    torch.testing.assert_close(chain.coef_xt, ref["posterior_mean_coef2"], **TOL)
    torch.testing.assert_close(chain.sqrt_recip_abar, ref["sqrt_recip_alphas_cumprod"], **TOL)
    torch.testing.assert_close(chain.sqrt_recipm1_abar, ref["sqrt_recipm1_alphas_cumprod"], **TOL)


def test_one_reverse_step_reproduces_p_sample(official, mar):
    P = official["p_sample"]
    kw = {"steps": P["steps"], "temperature": P["temperature"]}
    with torch.no_grad():
        plain = mar.diffloss.p_sample(P["x"], P["zc"], index=P["index"], cfg=None, noise=P["noise_plain"], **kw)
        last = mar.diffloss.p_sample(P["x"], P["zc"], index=0, cfg=None, noise=None, **kw)
        guided = mar.diffloss.p_sample(P["x"], torch.cat([P["zc"], P["zu"]]), index=P["index"], cfg=P["cfg"] - 1,
                                       noise=P["noise_guided"], **kw)  # MAR's cfg is genarena's 1 + w
    torch.testing.assert_close(plain, P["plain"], **TOL)
    torch.testing.assert_close(last, P["last"], **TOL)
    torch.testing.assert_close(guided, P["guided"], **TOL)


@pytest.mark.parametrize("run", ["sample_plain", "sample_guided"])
def test_sampling_reproduces_the_official_tokens_in_the_same_order(official, run):
    S = official[run]
    mar = converted_mar(official, noise_schedule=S["noise_schedule"])
    noise = iter(S["noise"])
    tokens = mar.sample(S["labels"], cfg=S["cfg"] - 1, cfg_schedule=S["cfg_schedule"], temperature=S["temperature"],
                        top_k=0, top_p=0.0, steps=S["num_iter"], diffusion_steps=S["steps"], orders=S["orders"],
                        noise=noise)
    assert next(noise, None) is None  # every recorded draw used, in order
    # a random denoiser is not a trained one: its first reverse step multiplies eps errors by ~80, and the tokens
    # reach ~1e2; they are compared to 1e-5 of that scale (a 1% change of temperature or cfg moves them ~1)
    scale = S["tokens"].abs().max()
    torch.testing.assert_close(tokens, S["tokens"], atol=1e-5 * scale.item(), rtol=0)


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("override, accepted", [
    ("generator.backbone=timm", "shared, vit"),
    ("generator.diffusion_loss=vlb", "eps, learned_sigma"),
    ("generator.order=spiral", "random, raster"),
    ("generator.sampling.diffusion_steps=2000", "diffusion_steps=2000 must lie in 1..1000"),
])
def test_mar_options_are_validated(override, accepted):
    cfg = compose_cfg(["generator=mar", override])
    with pytest.raises(ConfigError, match=accepted):
        validate(cfg)

"""The order x head matrix: the continuous multi-scale tokenizer, next-scale x diffusion, heads as a config axis."""

from __future__ import annotations

import pytest
import torch

from genarena.config import validate
from genarena.errors import ConfigError, IncompatibleTokenizerError
from genarena.generators import GENERATORS, build_generator
from genarena.generators.cells import CELLS, cell_of, resolve_head
from genarena.generators.heads import CEHead, DiffusionHead

from .conftest import GENERATOR_CFGS, SAMPLING, compose_cfg, tiny_generator, tiny_tokenizer, token_batch


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(n, 1, 8, 8, generator=g), size=32, mode="bilinear") * 2 - 1


# ------------------------------------------------------------------------------ the continuous multi-scale tokenizer
def test_mskl_scales_sum_back_to_the_latent():
    tok = tiny_tokenizer("mskl")
    x = images()
    tok.calibrate([x])
    mu = tok.posterior(x)[0]
    residuals = tok.pyramid.decompose(mu)
    assert [tuple(r.shape[-2:]) for r in residuals] == [(p, p) for p in tok.scales]
    torch.testing.assert_close(tok.pyramid.compose(residuals), mu, atol=1e-6, rtol=0)  # the sum is the latent
    # every scale is the area average of what the coarser ones leave
    rest = mu - tok.pyramid.compose(residuals, 2)
    torch.testing.assert_close(residuals[2], torch.nn.functional.interpolate(rest, size=4, mode="area"))
    tokens = tok.encode(x)
    assert tokens.shape == (6, sum(p * p for p in tok.scales), tok.token_dim)
    torch.testing.assert_close(tok.latent(tokens), mu, atol=1e-5, rtol=0)
    torch.testing.assert_close(tok.decode(tokens), tok.decode_features(mu).clamp(-1, 1), atol=1e-5, rtol=0)
    stds = [t.std().item() for t in tok.split_scales(tokens)]  # calibrated on these images: unit variance per scale
    assert stds == pytest.approx([1.0] * len(stds), abs=1e-4)


def test_mskl_progression_refines_and_phi_trains_only_on_the_prefix_loss():
    tok = tiny_tokenizer("mskl").train()
    x = images()
    progression = tok.decode_progression(tok.encode(x))
    assert len(progression) == len(tok.scales)
    torch.testing.assert_close(progression[-1], tok.decode(tok.encode(x)))
    recon, aux = tok(x)
    assert recon.shape == x.shape and set(aux) == {"loss", "kl", "pyramid_loss"} and aux["pyramid_loss"] > 0
    aux["pyramid_loss"].backward()  # the prefix loss reaches phi, never the encoder (the latent is detached)
    assert all(p.grad is None for p in tok.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tok.pyramid.parameters())


def test_mskl_config_values_are_checked():
    with pytest.raises(ConfigError, match="tokenizer.share_quant_resi=4"):
        validate(compose_cfg(["tokenizer=mskl", "tokenizer.patch_nums=[1,2,8]", "tokenizer.share_quant_resi=4"]))
    with pytest.raises(ConfigError, match="tokenizer.patch_nums"):
        validate(compose_cfg(["tokenizer=mskl", "tokenizer.patch_nums=[1,2,4]"]))
    with pytest.raises(ConfigError, match="tokenizer.pyramid_weight=-1"):
        validate(compose_cfg(["tokenizer=mskl", "tokenizer.pyramid_weight=-1"]))


# ------------------------------------------------------------------------------ next-scale x diffusion
def test_var_diffusion_cache_and_block_causal_mask_equal_teacher_forcing():
    gen, tok = tiny_generator("var_diffusion")
    gen.eval()
    tokens, labels = token_batch(tok, 4)
    with torch.no_grad():
        teacher = gen(tokens, labels)
        # block-causal: changing scale k's tokens changes no condition of scales <= k (they predict k from below)
        edited = tokens.clone()
        k, sizes = 2, gen.block_sizes
        start = sum(sizes[:k])
        edited[:, start:start + sizes[k]] += 1.0
        moved = (gen(edited, labels) - teacher).abs().amax((0, 2))  # (L,)
    assert moved[: start + sizes[k]].max() == 0 and moved[start + sizes[k]:].min() > 0
    torch.testing.assert_close(gen.incremental_conditions(tokens, labels), teacher, atol=1e-5, rtol=1e-5)


def test_var_diffusion_initial_loss_is_the_noise_variance():
    gen, tok = tiny_generator("var_diffusion", depth=2, width=64, heads=2)
    tokens, labels = token_batch(tok, 16)
    out = gen.loss(tokens, labels)
    # the denoiser's output layer starts at zero: it predicts eps = 0, so the loss is E[eps^2] = 1
    assert out["loss"].item() == pytest.approx(1.0, abs=0.03)
    assert {f"mse_s{k}" for k in range(len(tok.scales))} <= set(out) and out["mse_last"] > 0


def test_var_diffusion_completion_keeps_the_known_region_at_every_scale():
    from genarena.generators.var_diffusion import scale_known

    gen, tok = tiny_generator("var_diffusion")
    gen.eval()
    tokens, labels = token_batch(tok, 3)
    known = torch.zeros(3, 8, 8, dtype=torch.bool)
    known[:, :, :4] = True  # left half known: out-paint the right half
    known[2] = False  # nothing known: a plain sample
    out = gen.complete(tokens, known, labels, generator=torch.Generator().manual_seed(0), **SAMPLING["var_diffusion"])
    assert out.shape == tokens.shape and torch.isfinite(out).all()
    for k, (got, given, pn) in enumerate(zip(tok.split_scales(out), tok.split_scales(tokens), tok.scales)):
        keep = scale_known(known, pn).flatten(1)
        assert torch.equal(got[keep], given[keep]), k
        assert not torch.isclose(got[~keep], given[~keep]).all(-1).any(), k
    last = tok.split_scales(out)[-1].view(3, 8, 8, -1)
    assert torch.equal(last[:2, :, :4], tok.split_scales(tokens)[-1].view(3, 8, 8, -1)[:2, :, :4])


# ------------------------------------------------------------------------------ heads: one module each, a config axis
def test_every_order_uses_the_shared_head_modules():
    for name in GENERATORS:
        gen, _ = tiny_generator(name)
        head = gen.diffloss if name == "mar" else gen.head
        assert isinstance(head, DiffusionHead if gen.head_kind == "diffusion" else CEHead), name
        assert cell_of(GENERATOR_CFGS[name]) == (gen.order, gen.head_kind)
    assert type(tiny_generator("mar", order="raster")[0]).order == "raster"
    assert {cell for cell in CELLS} == {(o, h) for o in ("raster", "masked", "next-scale") for h in ("ce", "diffusion")}


@pytest.mark.parametrize("name, wrong, needle", [
    ("var_diffusion", "msvq", "has the diffusion head, which models continuous / multiscale_continuous tokens"),
    ("mar", "vq", "has the diffusion head"),
    ("ar", "kl", "has the ce head, which models discrete / multiscale tokens"),
    ("var", "mskl", "has the ce head"),
    ("var_diffusion", "kl", "needs a multiscale_continuous tokenizer (tokenizer=mskl)"),
])
def test_a_head_that_does_not_fit_the_tokens_is_a_config_error(name, wrong, needle):
    with pytest.raises(ConfigError, match="generator") as e:
        build_generator(GENERATOR_CFGS[name], tiny_tokenizer(wrong), 10)
    assert isinstance(e.value, IncompatibleTokenizerError) and needle in str(e.value)


@pytest.mark.parametrize("option, head, paradigm, selectors", [
    ("ar", "diffusion", "mar", {"order": "raster"}),
    ("maskgit", "diffusion", "mar", {"order": "random"}),
    ("var", "diffusion", "var_diffusion", {}),
    ("mar", "ce", "maskgit", {}),
    ("var_diffusion", "ce", "var", {}),
])
def test_generator_head_names_the_other_cell_of_the_order(option, head, paradigm, selectors):
    cfg = compose_cfg(["task=generator", f"generator={option}", f"generator.head={head}", "generator.depth=3",
                       "generator.sampling.cfg=2.5", "tokenizer.ckpt=x.ckpt"])
    with pytest.raises(ConfigError, match=f"generator.head='{head}': generator={option} has the"):
        validate(cfg)  # not resolved: a clear error, never a silent other model
    name = cfg.experiment_name
    assert resolve_head(cfg)
    validate(cfg)
    g = cfg.generator
    assert g.name == paradigm and g.head == head and all(g[k] == v for k, v in selectors.items())
    assert g.depth == 3 and g.sampling.cfg == 2.5  # what the command line set carries over ...
    own = compose_cfg([f"generator={paradigm}"]).generator  # ... the rest is the cell's own option file
    assert g.sampling.cfg_schedule == own.sampling.cfg_schedule and g.mlp_ratio == own.mlp_ratio
    assert cfg.experiment_name == name == f"generator_{option}_mnist5k"
    assert not resolve_head(cfg)  # its own head now: nothing to do


def test_an_option_of_the_other_cell_does_not_silently_vanish():
    cfg = compose_cfg(["generator=maskgit", "generator.head=diffusion", "generator.label_smoothing=0.2"])
    with pytest.raises(ConfigError, match="generator=mar, which has no generator.label_smoothing"):
        resolve_head(cfg)
    with pytest.raises(ConfigError, match="generator.head='mlp' is not accepted; choose one of ce, diffusion"):
        resolve_head(compose_cfg(["generator=ar", "generator.head=mlp"]))

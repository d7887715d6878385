"""Official generators: VAR's transformer, LlamaGen's GPT and MaskGIT's decoding against golden fixtures.

The fixtures under ``tests/fixtures/official/`` were made by ``make_var.py``, ``make_llamagen_gpt.py`` and
``make_maskgit.py`` there, which run the official repositories' code at tiny random configurations. The
VAR and LlamaGen weights go through the converters of ``genarena.official`` and are built with
:func:`genarena.generators.build_generator`, as an imported checkpoint would be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genarena.config import ARGeneratorConfig, VARGeneratorConfig
from genarena.errors import CheckpointError
from genarena.generators import build_generator
from genarena.generators.llama import swiglu_hidden
from genarena.generators.maskgit import reveal_step
from genarena.generators.sampling import cosine_mask_schedule, filter_logits
from genarena.official.llamagen_gpt import (
    OFFICIAL_SIZES,
    convert_llamagen_gpt,
    load_official_llamagen_gpt,
    rope_pair_permutation,
)
from genarena.official.presets import generator_preset
from genarena.official.var_transformer import (
    OFFICIAL_INIT,
    build_rule,
    convert_var_transformer,
    load_official_var_transformer,
)
from genarena.official.var_vqvae import convert_var_quantizer
from genarena.tokenizers import MSVQTokenizer, build_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def conv_net(z_channels: int) -> dict:
    """A one-level conv encoder/decoder (no downsampling): the latent grid is the image grid."""
    return {"ch": 8, "ch_mult": [1], "num_res_blocks": 1, "z_channels": z_channels, "net": "genarena", "ldm": None}


def assert_one_line_naming(err: CheckpointError, *parts: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)


# ------------------------------------------------------------------------------------------- VAR
def var_tokenizer(fx: dict) -> MSVQTokenizer:
    """An msvq tokenizer holding the fixture's official quantizer (its encoder/decoder are unused here)."""
    t = fx["config"]
    q_sd = {f"quantize.{k}": v for k, v in fx["quantizer_state_dict"].items()}
    kwargs, converted = convert_var_quantizer(q_sd, t["patch_nums"], t["quant_resi"])
    kwargs.pop("dim")
    tok = MSVQTokenizer(image_channels=1, resolution=t["patch_nums"][-1], **conv_net(t["Cvae"]), **kwargs)
    tok.quantizer.load_state_dict(converted)
    return tok.eval()


@pytest.fixture(scope="module")
def var_fx() -> dict:
    return fixture("var")


@pytest.fixture(scope="module")
def official_var(var_fx):
    cfg, sd = convert_var_transformer(var_fx["state_dict"], patch_nums=var_fx["config"]["patch_nums"])
    gen = build_generator(cfg, var_tokenizer(var_fx), var_fx["config"]["num_classes"])
    gen.load_state_dict(sd)  # strict
    return gen.eval()


def test_var_teacher_forced_logits_equal_the_official(var_fx, official_var):
    with torch.no_grad():
        inputs = official_var.quantizer.teacher_forcing_inputs(official_var.tokenizer.split_scales(var_fx["indices"]))
        logits = official_var(var_fx["indices"], var_fx["labels"])
    torch.testing.assert_close(inputs, var_fx["teacher_inputs"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits, var_fx["logits"], atol=1e-5, rtol=1e-5)


def test_var_cfg_top_k_1_sampling_equals_the_official(var_fx, official_var):
    """Same tokens, and the same guided logits at every scale (which pins the ramp ``w_k = cfg k / (K-1)``)."""
    guided = []

    def choose(k, logits):
        guided.append(logits)
        return logits.argmax(-1)

    official_var._decode(var_fx["labels"], var_fx["cfg"], "linear", choose)
    torch.testing.assert_close(torch.cat(guided, dim=1), var_fx["sample_guided_logits"], atol=1e-5, rtol=1e-5)
    tokens = official_var.sample(var_fx["labels"], cfg=var_fx["cfg"], cfg_schedule="linear", temperature=1.0,
                                 top_k=1, top_p=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, var_fx["sample_tokens"])


def test_var_kv_cache_of_the_official_model_equals_teacher_forcing(var_fx, official_var):
    with torch.no_grad():
        teacher = official_var(var_fx["indices"], var_fx["labels"])
    torch.testing.assert_close(official_var.incremental_logits(var_fx["indices"], var_fx["labels"]), teacher,
                               atol=1e-5, rtol=1e-5)


def test_var_top_k_top_p_keep_the_official_sets(var_fx):
    for (top_k, top_p), kept in zip(var_fx["filters"], var_fx["filter_kept"]):
        ours = torch.isfinite(filter_logits(var_fx["filter_logits"], top_k, top_p))
        assert torch.equal(ours, kept), (top_k, top_p)
    assert var_fx["filter_kept"].sum(-1).unique().numel() > 3  # the cases keep sets of different sizes


def test_var_official_init_matches_init_weights(var_fx):
    """genarena's ``init=official`` draws every tensor at the scale VAR's ``init_weights`` gives it (checked
    per tensor, and per AdaLN row group: gates, scales and shifts)."""
    t = var_fx["config"]
    official, _ = convert_var_transformer(var_fx["init_state_dict"])  # config only
    _, official_sd = convert_var_transformer(var_fx["init_state_dict"])
    torch.manual_seed(0)
    ours = build_generator(official, var_tokenizer(var_fx), t["num_classes"]).state_dict()
    c = t["width"]
    for key, ref in official_sd.items():
        mine = ours[key]
        groups = [(mine[:2 * c], ref[:2 * c]), (mine[2 * c:], ref[2 * c:])] if key.endswith("ada.1.weight") \
            else [(mine, ref)]
        for a, b in groups:
            if not b.any():
                assert not a.any(), key
            elif key.endswith("log_scale"):
                torch.testing.assert_close(a, b)
            else:  # two std estimates from n draws each: 4 standard errors of their ratio
                tol = max(0.1, 4 / a.numel() ** 0.5)
                ratio = (a.float().std() / b.float().std()).item()
                assert 1 / (1 + tol) < ratio < 1 + tol, (key, ratio)


def test_var_official_init_starts_at_log_vocab(var_fx):
    t = var_fx["config"]
    cfg, _ = convert_var_transformer(var_fx["state_dict"])
    gen = build_generator(cfg, var_tokenizer(var_fx), t["num_classes"]).eval()
    with torch.no_grad():
        loss = gen.loss(var_fx["indices"], var_fx["labels"])["loss"]
    assert abs(loss.item() - torch.log(torch.tensor(float(t["vocab_size"]))).item()) < 0.01


def test_var_build_rule_and_init_values_are_build_vae_var_s(var_fx):
    var_yaml = generator_preset("var")
    for depth, official in var_fx["build_rule"].items():
        rule = build_rule(depth)
        assert (rule["width"], rule["heads"]) == (official["width"], official["heads"])
        assert rule["drop_path"] == pytest.approx(official["drop_path"])
        assert official["mlp_ratio"] == 4.0 and official["attn_l2_norm"] and not official["shared_aln"]
        assert {k: official[k] for k in OFFICIAL_INIT} == OFFICIAL_INIT
        assert official["init_std"] < 0  # "automated": sqrt(1 / 3C)
    assert {k: var_yaml[k] for k in OFFICIAL_INIT} == OFFICIAL_INIT  # the YAML's values for init=official
    cfg, _ = convert_var_transformer(var_fx["state_dict"])
    assert cfg["class_dropout"] == var_fx["config"]["cond_drop_rate"]


def test_converted_var_config_fits_the_schema(var_fx):
    cfg, _ = convert_var_transformer(var_fx["state_dict"])
    merged = OmegaConf.merge(OmegaConf.structured(VARGeneratorConfig), cfg)  # unknown keys / wrong types raise
    assert merged.k_bias is False and merged.init == "official" and merged.depth == var_fx["config"]["depth"]
    assert (merged.width, merged.heads) == (var_fx["config"]["width"], var_fx["config"]["heads"])


def test_var_converter_names_every_bad_key_in_one_line(var_fx):
    sd = dict(var_fx["state_dict"])
    del sd["blocks.1.ffn.fc2.bias"]
    sd["blocks.0.attn.k_bias"] = torch.zeros(32)
    sd["head.bias"] = torch.zeros(17)
    with pytest.raises(CheckpointError) as e:
        convert_var_transformer(sd)
    assert_one_line_naming(e.value, "missing keys (1): blocks.1.ffn.fc2.bias",
                           "unexpected keys (1): blocks.0.attn.k_bias", "head.bias (17,) != (16,)")


def test_var_converter_refuses_what_genarena_cannot_hold(var_fx):
    sd = dict(var_fx["state_dict"])
    with pytest.raises(CheckpointError, match="scales \\[1, 2, 3, 4\\], not the tokenizer's patch_nums"):
        convert_var_transformer(sd, patch_nums=[1, 2, 4])
    with pytest.raises(CheckpointError, match="zero_k_bias"):
        convert_var_transformer({**sd, "blocks.0.attn.zero_k_bias": torch.ones(32)})
    with pytest.raises(CheckpointError, match="shared AdaLN"):
        convert_var_transformer({**sd, "shared_ada_lin.1.weight": torch.zeros(6 * 32, 32)})
    truncated = {k: v for k, v in sd.items() if not k.startswith("class_emb")}
    with pytest.raises(CheckpointError, match="missing keys \\(1\\): class_emb.weight"):
        convert_var_transformer(truncated)


def test_load_official_var_transformer_reads_a_released_file(var_fx, tmp_path):
    path = tmp_path / "var_d2.pth"
    torch.save(var_fx["state_dict"], path)
    cfg, sd = load_official_var_transformer(path)
    assert cfg["depth"] == 2 and torch.equal(sd["pos_embed"], var_fx["state_dict"]["pos_1LC"])
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_official_var_transformer(path)


# -------------------------------------------------------------------------------------- LlamaGen
@pytest.fixture(scope="module")
def llama_fx() -> dict:
    return fixture("llamagen_gpt")


@pytest.fixture(scope="module")
def official_llama(llama_fx):
    t = llama_fx["config"]
    side = int(t["block_size"] ** 0.5)
    tok = build_tokenizer({"name": "vq", **conv_net(8), "vocab_size": t["vocab_size"], "beta": 0.25,
                           "l2_norm_codes": False, "entropy_weight": 0.0, "entropy_temperature": 1.0,
                           "dead_code_threshold": 0.0, "usage_decay": 0.99}, 1, side).eval()
    cfg, sd = convert_llamagen_gpt(llama_fx["state_dict"], heads=t["n_head"], ffn_multiple_of=t["multiple_of"])
    gen = build_generator(cfg, tok, t["num_classes"])
    gen.load_state_dict(sd)  # strict
    return gen.eval()


def test_llamagen_teacher_forced_logits_equal_the_official(llama_fx, official_llama):
    with torch.no_grad():
        logits = official_llama(llama_fx["tokens"], llama_fx["labels"])
    torch.testing.assert_close(logits, llama_fx["logits"], atol=1e-5, rtol=1e-5)


def test_llamagen_cfg_top_k_1_generation_equals_the_official(llama_fx, official_llama):
    """LlamaGen's ``cfg_scale`` s is genarena's constant ``w = s - 1``; same guided logits, same tokens."""
    w = llama_fx["cfg_scale"] - 1
    guided = []

    def choose(i, logits):
        guided.append(logits)
        return logits.argmax(-1)

    official_llama._decode(llama_fx["labels"], w, "constant", choose)
    torch.testing.assert_close(torch.stack(guided, dim=1), llama_fx["generated_logits"], atol=1e-5, rtol=1e-5)
    tokens = official_llama.sample(llama_fx["labels"], cfg=w, cfg_schedule="constant", temperature=1.0, top_k=1,
                                   top_p=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, llama_fx["generated"])


def test_llamagen_sizes_and_ffn_rule_are_the_official(llama_fx):
    for name, size in OFFICIAL_SIZES.items():
        assert tuple(llama_fx["model_sizes"][name]) == size
    for width, hidden in llama_fx["ffn_hidden"].items():
        assert swiglu_hidden(width, 4.0, 256) == hidden


def test_rope_pair_permutation_maps_interleaved_pairs_to_halves():
    perm = rope_pair_permutation(8)
    assert perm.tolist() == [0, 2, 4, 6, 1, 3, 5, 7]  # new dim j <- old perm[j]: (2j, 2j+1) -> (j, j+4)


def test_converted_llamagen_config_fits_the_schema(llama_fx):
    t = llama_fx["config"]
    cfg, _ = convert_llamagen_gpt(llama_fx["state_dict"], heads=t["n_head"], ffn_multiple_of=t["multiple_of"])
    merged = OmegaConf.merge(OmegaConf.structured(ARGeneratorConfig), cfg)
    assert merged.backbone == "llama" and merged.pos_embed == "rope2d"
    assert merged.sampling.cfg_schedule == "constant" and merged.sampling.cfg == pytest.approx(0.75)


def test_llamagen_converter_is_strict(llama_fx):
    t = llama_fx["config"]
    sd = dict(llama_fx["state_dict"])
    del sd["layers.1.ffn_norm.weight"]
    sd["layers.0.attention.kv_cache.k_cache"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(33)
    with pytest.raises(CheckpointError) as e:
        convert_llamagen_gpt(sd, heads=t["n_head"], ffn_multiple_of=t["multiple_of"])
    assert_one_line_naming(e.value, "missing keys (1): layers.1.ffn_norm.weight",
                           "unexpected keys (1): layers.0.attention.kv_cache.k_cache", "norm.weight (33,) != (32,)")
    with pytest.raises(CheckpointError, match="feed_forward.w1.weight \\(96, 32\\) != \\(256, 32\\)"):
        convert_llamagen_gpt(llama_fx["state_dict"], heads=t["n_head"])  # LlamaGen's multiple_of 256
    with pytest.raises(CheckpointError, match="not a released size"):
        convert_llamagen_gpt(llama_fx["state_dict"], ffn_multiple_of=t["multiple_of"])


def test_load_official_llamagen_gpt_reads_both_layouts(llama_fx, tmp_path):
    t = llama_fx["config"]
    sd = llama_fx["state_dict"]
    kw = {"heads": t["n_head"], "ffn_multiple_of": t["multiple_of"]}
    torch.save({"model": sd, "steps": 10}, tmp_path / "ddp.pt")  # what train_c2i.py writes
    torch.save({**sd, "freqs_cis": torch.zeros(17, 8, 2)}, tmp_path / "fsdp.pt")  # a plain state dict
    expected = convert_llamagen_gpt(sd, **kw)[1]
    for name in ("ddp.pt", "fsdp.pt"):
        _, got = load_official_llamagen_gpt(tmp_path / name, **kw)
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
    torch.save({"optimizer": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_official_llamagen_gpt(tmp_path / "bad.pt", **kw)


# --------------------------------------------------------------------------------------- MaskGIT
@pytest.fixture(scope="module")
def maskgit_fx() -> dict:
    return fixture("maskgit")


def test_maskgit_cosine_token_counts_equal_the_official(maskgit_fx):
    for (n, steps), official in zip(maskgit_fx["schedule_cases"], maskgit_fx["schedule"]):
        ours = cosine_mask_schedule(n, steps, float32=True)
        assert ours[:-1] == official and ours[-1] == 0, (n, steps)


def test_maskgit_decoding_steps_equal_the_official(maskgit_fx):
    """Each step: sampled ids, annealed Gumbel confidence ``log p + tau (1 - (t+1)/T) g`` with the official
    draws and noise, the least confident re-masked, known tokens kept."""
    c = maskgit_fx["config"]
    steps, mask_id = c["steps"], c["mask_id"]
    counts = cosine_mask_schedule(c["tokens"], steps, float32=True)
    for t in range(steps):
        out = reveal_step(maskgit_fx["step_inputs"][t], maskgit_fx["step_logits"][t], maskgit_fx["step_sampled"][t],
                          maskgit_fx["step_noise"][t], c["choice_temperature"] * (1 - (t + 1) / steps), counts[t],
                          mask_id)
        expected = maskgit_fx["step_inputs"][t + 1] if t + 1 < steps else maskgit_fx["step_output"]
        assert torch.equal(out, expected), t

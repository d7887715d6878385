"""Generator invariants: masks, KV caches, initial losses, overfitting, schedules, sampling, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genarena.errors import IncompatibleTokenizerError
from genarena.generators import VAR, MaskGIT, RasterAR, VARDiffusion, build_generator
from genarena.generators.backbone import block_causal_mask, rope_2d
from genarena.generators.diffusion import DiffusionLoss
from genarena.generators.sampling import cosine_mask_schedule, filter_logits, guide

from .conftest import GENERATOR_CFGS, SAMPLING, TOKENIZER_OF, tiny_generator, tiny_tokenizer, token_batch

PARADIGMS = ["var", "ar", "maskgit", "mar", "var_diffusion"]
# MAR's own architecture (plain ViT, learned-variance diffusion loss), next to the shared-backbone default
OFFICIAL_MAR = {"backbone": "vit", "diffusion_loss": "learned_sigma", "qk_norm": False, "dropout": 0.1}
# every paradigm, plus MAR's official architecture: (name, overrides)
VARIANTS = [(p, {}) for p in PARADIGMS] + [("mar", OFFICIAL_MAR)]
VARIANT_IDS = PARADIGMS + ["mar-vit-learned-sigma"]


def test_block_causal_mask_shows_exactly_own_and_coarser_scales():
    m = block_causal_mask([1, 4, 9])
    assert m.shape == (14, 14)
    level = [0] + [1] * 4 + [2] * 9
    for q in range(14):
        for k in range(14):
            assert bool(m[q, k]) == (level[q] >= level[k])


@pytest.mark.parametrize("name", ["var", "ar"])
def test_kv_cached_logits_equal_teacher_forced(name):
    gen, tok = tiny_generator(name)
    gen.eval()
    tokens, labels = token_batch(tok, 4)
    with torch.no_grad():
        teacher = gen(tokens, labels)
    cached = gen.incremental_logits(tokens, labels)
    torch.testing.assert_close(cached, teacher, atol=1e-5, rtol=1e-5)


def test_ar_learned_positions_cache_too():
    gen, tok = tiny_generator("ar", pos_embed="learned")
    gen.eval()
    tokens, labels = token_batch(tok, 3)
    with torch.no_grad():
        torch.testing.assert_close(gen.incremental_logits(tokens, labels), gen(tokens, labels), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("over", [{}, OFFICIAL_MAR], ids=["shared", "vit"])
def test_mar_causal_variant_cache_equals_teacher_forcing(over):
    gen, tok = tiny_generator("mar", order="raster", **over)
    assert type(gen).__name__ == "RasterMAR"
    gen.eval()
    tokens, labels = token_batch(tok, 3)
    with torch.no_grad():
        teacher = gen.causal_conditions(tokens, gen.class_embed(labels))
    torch.testing.assert_close(gen.incremental_conditions(tokens, labels), teacher, atol=1e-5, rtol=1e-5)


def test_rope_leaves_the_class_token_unrotated():
    cos, sin = rope_2d((4, 4), 16, prefix=1)
    assert cos.shape == (17, 16) and torch.all(cos[0] == 1) and torch.all(sin[0] == 0)


@pytest.mark.parametrize("name", ["var", "ar", "maskgit"])
def test_initial_discrete_loss_is_log_vocab(name):
    gen, tok = tiny_generator(name, depth=2, width=64, heads=2)
    tokens, labels = token_batch(tok, 16)
    loss = gen.loss(tokens, labels)["loss"].item()
    assert abs(loss - math.log(tok.vocab_size)) / math.log(tok.vocab_size) < 0.02


@pytest.mark.parametrize("name,fraction", [("var", 0.5), ("ar", 0.5), ("maskgit", 0.6), ("mar", 0.6)])
def test_each_paradigm_overfits_a_fixed_batch_of_32(name, fraction):
    gen, tok = tiny_generator(name, class_dropout=0.0, depth=2, width=64, heads=2)
    tokens, labels = token_batch(tok, 32)
    opt = torch.optim.AdamW(gen.parameters(), lr=3e-3, betas=(0.9, 0.95))
    torch.manual_seed(0)
    first, recent = None, []
    for _ in range(150):
        loss = gen.loss(tokens, labels)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        recent = (recent + [loss.item()])[-10:]
    assert sum(recent) / len(recent) < fraction * first, (first, recent)


@pytest.mark.parametrize("loss", ["eps", pytest.param("learned_sigma", marks=pytest.mark.slow)])
def test_diffusion_loss_learns_a_2d_gaussian_and_temperature_controls_spread(loss):
    torch.manual_seed(0)
    mean = torch.tensor([1.5, -0.5])
    chol = torch.tensor([[0.6, 0.0], [0.3, 0.4]])
    cov = chol @ chol.T
    dl = DiffusionLoss(token_dim=2, cond_dim=4, width=64, depth=3, timesteps=1000, batch_mul=4, schedule="cosine",
                       loss=loss)
    opt = torch.optim.Adam(dl.parameters(), lr=2e-3)
    z = torch.zeros(256, 4)
    losses = []
    for _ in range(1500):
        x0 = mean + torch.randn(256, 2) @ chol.T
        loss = dl(x0, z)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-100:]) / 100 < 0.7 * sum(losses[:20]) / 20
    g = torch.Generator().manual_seed(1)
    s = dl.sample(torch.zeros(4000, 4), steps=50, temperature=1.0, cfg=None, generator=g)
    assert torch.allclose(s.mean(0), mean, atol=0.1)
    assert torch.allclose(torch.cov(s.T), cov, atol=0.08)
    cold = dl.sample(torch.zeros(4000, 4), steps=50, temperature=0.0, cfg=None,
                     generator=torch.Generator().manual_seed(1))
    assert torch.cov(cold.T).trace() < 0.8 * torch.cov(s.T).trace()


def test_mask_schedule_reveals_every_token_once():
    for n, steps in [(64, 8), (256, 8), (5, 8), (64, 1), (130, 10)]:
        remaining = cosine_mask_schedule(n, steps)
        assert len(remaining) == steps and remaining[-1] == 0
        revealed = [a - b for a, b in zip([n] + remaining[:-1], remaining)]
        assert sum(revealed) == n and all(r >= 0 for r in revealed)
        # at least one per step while more than one is masked; the last masked token waits for the final
        # step (MaskGIT's and MAR's official decoders: max(1, min(masked - 1, ...)))
        assert all(r >= 1 for r, before in zip(revealed, [n] + remaining[:-1]) if before > 1)
        assert min(remaining[:-1], default=1) >= 1 and revealed[-1] >= 1


def test_maskgit_never_remasks_revealed_tokens():
    gen, tok = tiny_generator("maskgit")
    gen.eval()
    trace: list = []
    labels = torch.arange(6)
    out = gen.sample(labels, generator=torch.Generator().manual_seed(0), trace=trace, **SAMPLING["maskgit"])
    assert len(trace) == 8
    for before, after in zip(trace, trace[1:]):
        assert torch.all(after | ~before)  # once revealed, always revealed
    counts = [int(t[0].sum()) for t in trace]
    assert counts[-1] == gen.seq_len and all(b <= a for b, a in zip(counts, counts[1:]))
    assert out.max() < tok.vocab_size


@pytest.mark.parametrize("name,over", VARIANTS, ids=VARIANT_IDS)
def test_sampling_shapes_ranges_and_determinism(name, over):
    gen, tok = tiny_generator(name, **over)
    gen.eval()
    labels = torch.tensor([0, 3, 9])
    a = gen.sample(labels, generator=torch.Generator().manual_seed(7), **SAMPLING[name])
    b = gen.sample(labels, generator=torch.Generator().manual_seed(7), **SAMPLING[name])
    c = gen.sample(labels, generator=torch.Generator().manual_seed(8), **SAMPLING[name])
    assert torch.equal(a, b) and not torch.equal(a, c)
    if tok.kind in ("continuous", "multiscale_continuous"):
        assert a.shape == (3, tok.seq_len, tok.token_dim) and torch.isfinite(a).all()
    else:
        assert a.shape == (3, tok.seq_len) and a.dtype == torch.long
        assert 0 <= a.min() and a.max() < tok.vocab_size
    images = tok.decode(a)
    assert images.shape == (3, 1, 32, 32) and images.min() >= -1 and images.max() <= 1


@pytest.mark.parametrize("name,over", VARIANTS, ids=VARIANT_IDS)
def test_guidance_weight_zero_is_the_conditional_model(name, over):
    """A doubled [cond; uncond] batch with a vanishing weight samples exactly what cfg=0 samples."""
    gen, _ = tiny_generator(name, **over)
    gen.eval()
    labels = torch.tensor([1, 2, 5, 7])
    kw = {**SAMPLING[name], "cfg_schedule": "constant"}
    plain = gen.sample(labels, generator=torch.Generator().manual_seed(3), **{**kw, "cfg": 0.0})
    doubled = gen.sample(labels, generator=torch.Generator().manual_seed(3), **{**kw, "cfg": 1e-30})
    if plain.dtype == torch.long:
        assert torch.equal(plain, doubled)
    else:
        torch.testing.assert_close(plain, doubled, atol=1e-4, rtol=1e-4)


def test_guide_and_filters():
    c, u = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 3.0])
    assert torch.equal(guide(c, u, 0.0), c)
    assert torch.equal(guide(c, u, 2.0), torch.tensor([3.0, 0.0]))
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 0.0)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, 0, 0.7))
    assert kept.tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("name,over", VARIANTS + [("mar", {**OFFICIAL_MAR, "order": "raster"})],
                         ids=VARIANT_IDS + ["mar-raster-vit-learned-sigma"])
def test_flops_formula_matches_flop_counter(name, over, monkeypatch):
    gen, tok = tiny_generator(name, depth=2, width=64, heads=2, **over)
    tokens, labels = token_batch(tok, 8)
    if hasattr(gen, "draw_mask_ratio"):  # random-order MAR: the analytic figure uses the expected mask ratio
        from genarena.generators.mar import truncnorm_mean

        monkeypatch.setattr(gen, "draw_mask_ratio", lambda: truncnorm_mean(gen.mask_ratio_min))
    # the math backend runs attention as matmuls the counter sees (fused CPU kernels are not counted)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        gen.loss(tokens, labels)["loss"].backward()
    measured = fc.get_total_flops() / 8
    assert abs(measured - gen.flops_per_image(True)) / measured < 0.10, (measured, gen.flops_per_image(True))
    gen.eval()
    sampling = SAMPLING[name]
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        gen.sample(torch.arange(4), generator=torch.Generator().manual_seed(0), **sampling)
    measured = fc.get_total_flops() / 4
    analytic = gen.flops_per_image(False, **{k: v for k, v in sampling.items() if k != "cfg_schedule"})
    assert abs(measured - analytic) / measured < 0.10, (measured, analytic)


@pytest.mark.parametrize("name", PARADIGMS)
def test_a_tokenizer_of_the_wrong_kind_fails_at_start(name):
    wrong = {"var": "vq", "ar": "msvq", "maskgit": "kl", "mar": "vq", "var_diffusion": "kl"}[name]
    with pytest.raises(IncompatibleTokenizerError, match=f"tokenizer={TOKENIZER_OF[name]}"):
        build_generator(GENERATOR_CFGS[name], tiny_tokenizer(wrong), 10)


def test_depth_knob_sets_width_and_heads():
    gen, _ = tiny_generator("var", depth=3, width=None, heads=None)
    assert (gen.width, gen.heads) == (192, 3)
    assert len(gen.transformer.blocks) == 3


def test_mar_denoiser_width_follows_the_backbone_unless_set():
    for depth in (1, 2):
        gen, _ = tiny_generator("mar", depth=depth, width=None, heads=None, diffusion_width=None)
        assert gen.diffloss.net.width == gen.width == 64 * depth
    gen, _ = tiny_generator("mar", depth=2, width=None, heads=None, diffusion_width=48)
    assert gen.diffloss.net.width == 48


def test_gumbel_noise_is_finite_with_the_gumbel_mean():
    from genarena.generators.sampling import gumbel_noise

    g = gumbel_noise((200_000,), torch.Generator().manual_seed(0), "cpu")
    assert torch.isfinite(g).all()
    assert abs(g.mean().item() - 0.5772) < 0.02  # Euler-Mascheroni constant


# ------------------------------------------------------------------------------ guidance ramps, MaskGIT's decoding
class SplitHead(torch.nn.Module):
    """Stands in for a generator's head: logits 0 for the conditional half of a doubled batch and
    ``e_0`` for the unconditional half, so the guided logit of token 0 is ``-w``."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab

    def modulation(self, cond):  # the real heads' precomputed AdaLN modulation; this stand-in has none
        return None

    def forward(self, x, cond=None, mod=None):
        out = torch.zeros(*x.shape[:-1], self.vocab)
        out[x.shape[0] // 2:, ..., 0] = 1.0
        return out


def guidance_weights_used(name: str, monkeypatch, cfg: float, **over) -> list[float]:
    """The weight ``w`` of every decoding step, read from the guided logits the sampler receives."""
    import importlib

    module = importlib.import_module(f"genarena.generators.{name}")
    gen, _ = tiny_generator(name)
    gen.eval()
    monkeypatch.setattr(gen, "head", SplitHead(gen.vocab_size))
    seen, real = [], module.sample_logits

    def recording(logits, *args, **kwargs):
        seen.append(-logits[..., 0].flatten().unique().tolist()[0] if logits[..., 0].unique().numel() == 1 else None)
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(module, "sample_logits", recording)
    gen.sample(torch.arange(2), generator=torch.Generator().manual_seed(0), **{**SAMPLING[name], "cfg": cfg, **over})
    return seen


def test_var_guidance_ramps_from_0_at_the_first_scale_to_cfg_at_the_last(monkeypatch):
    gen, _ = tiny_generator("var")
    k = len(gen.scales)
    used = guidance_weights_used("var", monkeypatch, 2.0)
    assert used == pytest.approx([2.0 * i / (k - 1) for i in range(k)])


def test_maskgit_guidance_ramps_linearly_over_steps(monkeypatch):
    used = guidance_weights_used("maskgit", monkeypatch, 3.0, steps=6)
    assert used == pytest.approx([3.0 * t / 5 for t in range(6)])


def test_ar_guidance_is_constant_by_default_and_linear_on_request(monkeypatch):
    gen, _ = tiny_generator("ar")
    n = gen.seq_len
    assert guidance_weights_used("ar", monkeypatch, 1.5) == pytest.approx([1.5] * n)
    used = guidance_weights_used("ar", monkeypatch, 1.5, cfg_schedule="linear")
    assert used == pytest.approx([1.5 * i / (n - 1) for i in range(n)])


def test_maskgit_anneals_the_choice_temperature_and_follows_the_cosine_counts(monkeypatch):
    """Step t draws its confidence noise at ``choice_temperature (1 - (t+1)/T)`` and keeps the schedule's
    count masked (``reveal_step`` itself is pinned against the official decoder in test_official_generators)."""
    import genarena.generators.maskgit as maskgit

    gen, _ = tiny_generator("maskgit")
    gen.eval()
    calls, real = [], maskgit.reveal_step

    def recording(tokens, logits, sampled, noise, choice_temperature, n_masked_after, mask_id):
        out = real(tokens, logits, sampled, noise, choice_temperature, n_masked_after, mask_id)
        calls.append((choice_temperature, n_masked_after, int((out == mask_id).sum(1).max())))
        return out

    monkeypatch.setattr(maskgit, "reveal_step", recording)
    steps, tau = 6, 4.5  # at (t+1)/T = 2/3 float32 masks 31 of 64 tokens, float64 32
    gen.sample(torch.arange(3), generator=torch.Generator().manual_seed(0),
               **{**SAMPLING["maskgit"], "steps": steps, "choice_temperature": tau})
    counts = cosine_mask_schedule(gen.seq_len, steps, float32=True)
    assert [c[0] for c in calls] == pytest.approx([tau * (1 - (t + 1) / steps) for t in range(steps)])
    assert [c[1] for c in calls] == counts == [c[2] for c in calls]
    assert counts[0] < gen.seq_len and counts[-1] == 0


def test_mask_schedule_float32_is_maskgit_s_arithmetic():
    """MaskGIT's JAX decoder computes ``N cos(pi/2 (t+1)/T)`` in float32: at ``cos(pi/3) = 0.5`` it floors
    ``N/2 - eps``; MAR's (float64) floors ``N/2``."""
    assert cosine_mask_schedule(64, 6)[3] == 32 and cosine_mask_schedule(64, 6, float32=True)[3] == 31


# ------------------------------------------------------------------------------ the llama backbone (LlamaGen's GPT)
def tiny_llama(**over):
    return tiny_generator("ar", backbone="llama", ffn_multiple_of=32, **over)


def test_llama_backbone_starts_at_exactly_log_vocab():
    gen, tok = tiny_llama()
    tokens, labels = token_batch(tok, 8)
    assert abs(gen.loss(tokens, labels)["loss"].item() - math.log(tok.vocab_size)) < 1e-6
    assert not any("ada" in n or n.endswith(".bias") for n, _ in gen.named_parameters())  # no AdaLN, no biases


def test_llama_backbone_kv_cache_equals_teacher_forcing():
    gen, tok = tiny_llama()
    with torch.no_grad():
        for p in gen.parameters():  # LlamaGen's zero head would make every logit 0
            p.add_(torch.randn_like(p) * 0.1)
    gen.eval()
    tokens, labels = token_batch(tok, 3)
    with torch.no_grad():
        teacher = gen(tokens, labels)
    assert teacher.abs().max() > 0.1
    torch.testing.assert_close(gen.incremental_logits(tokens, labels), teacher, atol=1e-5, rtol=1e-5)


def test_llama_backbone_zeroes_the_class_token_s_rope_rows():
    from genarena.generators.llama import llamagen_rope

    cos, sin = llamagen_rope((4, 4), 16)
    ref_cos, ref_sin = rope_2d((4, 4), 16, prefix=1)
    assert not cos[0].any() and not sin[0].any()  # LlamaGen: the class token's q and k become zero
    assert torch.equal(cos[1:], ref_cos[1:]) and torch.equal(sin[1:], ref_sin[1:])


def test_llama_backbone_flops_formula_matches_flop_counter():
    gen, tok = tiny_llama(depth=2, width=64, heads=2)
    tokens, labels = token_batch(tok, 8)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        gen.loss(tokens, labels)["loss"].backward()
    measured = fc.get_total_flops() / 8
    assert abs(measured - gen.flops_per_image(True)) / measured < 0.10
    gen.eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        gen.sample(torch.arange(4), generator=torch.Generator().manual_seed(0), **SAMPLING["ar"])
    measured = fc.get_total_flops() / 4
    assert abs(measured - gen.flops_per_image(False, cfg=1.5)) / measured < 0.10


def test_llama_backbone_token_dropout_covers_the_class_token():
    gen, tok = tiny_llama(embed_dropout=0.5)
    gen.train()
    seen = []
    gen.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    tokens, labels = token_batch(tok, 16)
    torch.manual_seed(0)
    gen.loss(tokens, labels)
    assert (seen[0][:, 0] == 0).any()  # some class-token inputs dropped, as LlamaGen's tok_dropout does


# ------------------------------------------------------------------------------ configs of the official options
def test_sampling_parameters_are_required_and_come_from_the_config():
    """Every key of a paradigm's ``sampling`` YAML is a keyword argument of its ``sample`` without a default."""
    import inspect

    from .conftest import compose_cfg

    for name, cls in (("var", VAR), ("ar", RasterAR), ("maskgit", MaskGIT), ("var_diffusion", VARDiffusion)):
        keys = compose_cfg([f"generator={name}"]).generator.sampling.keys()
        params = inspect.signature(cls.sample).parameters
        for key in keys:
            assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
            assert params[key].default is inspect.Parameter.empty, (name, key)
    gen, _ = tiny_generator("maskgit")
    with pytest.raises(TypeError, match="steps"):
        gen.flops_per_image(False, cfg=1.5)


@pytest.mark.parametrize("overrides, needle", [
    (["generator=ar", "generator.backbone=gpt"], "generator.backbone='gpt' is not accepted; choose one of shared, "
                                                 "llama"),
    (["generator=ar", "generator.backbone=llama", "generator.pos_embed=learned"], "2-D RoPE"),
    (["generator=ar", "generator.ffn_multiple_of=0"], "generator.ffn_multiple_of=0"),
    (["generator=var", "generator.init=xavier"], "generator.init='xavier' is not accepted; choose one of shared, "
                                                 "official"),
])
def test_official_options_are_validated(overrides, needle):
    from genarena.config import validate
    from genarena.errors import ConfigError

    from .conftest import compose_cfg

    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(overrides))
    assert needle in str(e.value)


def test_official_options_build_from_the_shipped_config():
    from genarena.config import validate

    from .conftest import compose_cfg

    for overrides in (["generator=ar", "generator.backbone=llama"],
                      ["generator=var", "generator.k_bias=false", "generator.init=official"]):
        cfg = compose_cfg([*overrides, "tokenizer.ckpt=some.ckpt"])
        validate(cfg)
        arch = {k: v for k, v in cfg.generator.items() if k != "sampling"}
        kind = TOKENIZER_OF[cfg.generator.name]
        gen = build_generator({**arch, "depth": 1, "width": 32, "heads": 2}, tiny_tokenizer(kind), 10)
        assert gen.num_params() > 0
# ------------------------------------------------------------------------------ MAR: masking, schedule, guidance
def test_mar_mask_ratio_is_the_official_truncated_normal():
    """MAR draws one mask ratio per batch from N(1, 0.25) truncated to [0.7, 1] (scipy's truncnorm in models/mar.py)."""
    from scipy import stats

    from genarena.generators.mar import truncnorm_mean

    gen, _ = tiny_generator("mar", mask_ratio_min=0.7)
    torch.manual_seed(0)
    n = 20_000
    draws = torch.tensor([gen.draw_mask_ratio() for _ in range(n)], dtype=torch.float64)
    official = stats.truncnorm((0.7 - 1.0) / 0.25, 0.0, loc=1.0, scale=0.25)
    mean, var = (float(v) for v in official.stats("mv"))
    assert 0.7 <= draws.min() and draws.max() <= 1.0
    assert abs(draws.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert abs(draws.std().item() - math.sqrt(var)) < 0.02 * math.sqrt(var)
    assert stats.kstest(draws.numpy(), official.cdf).pvalue > 0.01
    assert truncnorm_mean(0.7) == pytest.approx(mean, rel=1e-9)  # the expectation the FLOP count uses


@pytest.mark.parametrize("schedule", ["linear", "constant"])
def test_mar_reveals_cosine_counts_and_ramps_guidance_with_the_revealed_fraction(schedule, monkeypatch):
    """L = 64 tokens in K = 4 steps: floor(64 cos(pi/2 k/4)) = 59, 45, 24, 0 stay masked, so 5, 14, 21, 24 are
    revealed; guidance w_k = w (L - masked_k) / L (MAR: cfg_k = 1 + (cfg - 1)(L - masked_k) / L, cfg = 1 + w)."""
    gen, tok = tiny_generator("mar")
    gen.eval()
    assert tok.seq_len == 64
    calls = []
    sample = gen.diffloss.sample

    def spy(z, **kw):
        calls.append((z.shape[0], kw["cfg"]))
        return sample(z, **kw)

    monkeypatch.setattr(gen.diffloss, "sample", spy)
    b, w = 3, 1.5
    gen.sample(torch.arange(b), cfg=w, cfg_schedule=schedule, temperature=1.0, top_k=0, top_p=0.0, steps=4,
               diffusion_steps=2, generator=torch.Generator().manual_seed(0))
    assert [rows for rows, _ in calls] == [2 * b * r for r in (5, 14, 21, 24)]  # conditional + unconditional rows
    expected = [w * (64 - masked) / 64 for masked in (59, 45, 24, 0)] if schedule == "linear" else [w] * 4
    assert [cfg for _, cfg in calls] == pytest.approx(expected, abs=1e-12)


def test_raster_mar_ramps_guidance_with_the_decoded_fraction(monkeypatch):
    gen, tok = tiny_generator("mar", order="raster")
    gen.eval()
    weights = []
    sample = gen.diffloss.sample
    monkeypatch.setattr(gen.diffloss, "sample", lambda z, **kw: weights.append(kw["cfg"]) or sample(z, **kw))
    gen.sample(torch.arange(2), cfg=2.0, cfg_schedule="linear", temperature=1.0, top_k=0, top_p=0.0, steps=4,
               diffusion_steps=1, generator=torch.Generator().manual_seed(0))
    n = tok.seq_len
    assert weights == pytest.approx([2.0 * i / n for i in range(n)], abs=1e-12)


# ------------------------------------------------------------------------------ MAR: the learned-variance loss
def cosine_schedule(t: int) -> tuple[float, float, float]:
    """``beta_t``, ``abar_t``, ``abar_{t-1}`` of the 1000-step cosine schedule (Nichol & Dhariwal), in float64."""
    f = lambda u: math.cos((u / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(t + 1)]
    abar = math.prod(1 - b for b in betas)
    return betas[t], abar, abar / (1 - betas[t])


def posterior_variance(t: int) -> float:
    beta, abar, abar_prev = cosine_schedule(t)
    return beta * (1 - abar_prev) / (1 - abar)


def learned_sigma_head(monkeypatch, eps_out: Tensor, v: Tensor) -> tuple[DiffusionLoss, Tensor]:
    """A learned-sigma DiffusionLoss whose denoiser outputs ``[eps_out, v]``; returns it and that output (a leaf)."""
    dl = DiffusionLoss(token_dim=eps_out.shape[1], cond_dim=4, width=8, depth=1, timesteps=1000, batch_mul=1,
                       schedule="cosine", loss="learned_sigma")
    out = torch.cat([eps_out, v], dim=1).requires_grad_()
    monkeypatch.setattr(dl.net, "forward", lambda x, t, z: out)
    return dl, out


def test_learned_sigma_loss_reduces_to_known_values(monkeypatch):
    """With eps predicted exactly and v = -1 (the posterior's variance) the VLB term is 0; v = +1 (beta_t) gives
    KL(N(mu, s~^2) || N(mu, beta)) in bits; an eps error d gives MSE d^2 and a mean error c1 sqrt(1/abar - 1) d."""
    n, d, t = 4, 3, 500
    x0, eps = torch.randn(n, d), torch.randn(n, d)
    ts = torch.full((n,), t)
    beta, abar, abar_prev = cosine_schedule(t)
    s2 = posterior_variance(t)
    ln2 = math.log(2.0)

    dl, _ = learned_sigma_head(monkeypatch, eps, -torch.ones(n, d))
    terms = dl.terms(x0, torch.zeros(n, 4), ts, eps)
    torch.testing.assert_close(terms["mse"], torch.zeros(n))
    torch.testing.assert_close(terms["vb"], torch.zeros(n), atol=1e-6, rtol=0)

    dl, _ = learned_sigma_head(monkeypatch, eps, torch.ones(n, d))
    beta1, s2_1 = cosine_schedule(1)[0], posterior_variance(1)  # at t = 1 the two variances differ by ~2x
    kl = 0.5 * (-1 + math.log(beta1) - math.log(s2_1) + s2_1 / beta1) / ln2
    vb = dl.terms(x0, torch.zeros(n, 4), torch.ones(n, dtype=torch.long), eps)["vb"]
    torch.testing.assert_close(vb, torch.full((n,), kl), rtol=1e-4, atol=0)

    delta = 0.1
    dl, _ = learned_sigma_head(monkeypatch, eps + delta, -torch.ones(n, d))
    terms = dl.terms(x0, torch.zeros(n, 4), ts, eps)
    shift = beta * math.sqrt(abar_prev) / (1 - abar) * math.sqrt(1 / abar - 1) * delta
    torch.testing.assert_close(terms["mse"], torch.full((n,), delta ** 2))
    torch.testing.assert_close(terms["vb"], torch.full((n,), shift ** 2 / (2 * s2) / ln2), rtol=1e-3, atol=0)
    torch.testing.assert_close(terms["loss"], (terms["mse"] + terms["vb"]).mean())


def test_learned_sigma_loss_at_t0_is_the_discretised_gaussian_nll(monkeypatch):
    """At t = 0 the mean is x0 itself (exact eps) and the bound is -log P(x0's bin of width 2/255) under
    N(x0, s~_1^2) (the clipped posterior variance); outside [-0.999, 0.999] the outer bin is a half-line."""
    x0 = torch.tensor([[0.3], [-1.5], [1.5]])
    eps = torch.randn(3, 1)
    dl, _ = learned_sigma_head(monkeypatch, eps, -torch.ones(3, 1))
    vb = dl.terms(x0, torch.zeros(3, 4), torch.zeros(3, dtype=torch.long), eps)["vb"]
    half_bin = (1 / 255) / math.sqrt(posterior_variance(1))
    phi = lambda u: 0.5 * (1 + math.erf(u / math.sqrt(2)))  # noqa: E731
    inner = -math.log(phi(half_bin) - phi(-half_bin)) / math.log(2)
    outer = -math.log(phi(half_bin)) / math.log(2)
    torch.testing.assert_close(vb, torch.tensor([inner, outer, outer]), rtol=2e-3, atol=0)  # tanh-approximated CDF


def test_learned_sigma_vlb_trains_only_the_variance(monkeypatch):
    """The bound sees eps detached: the gradient on the eps half is the MSE's alone, 2 (eps_pred - eps) / (N D)."""
    n, d = 5, 3
    x0, eps, err = torch.randn(n, d), torch.randn(n, d), 0.2 * torch.randn(n, d)
    dl, out = learned_sigma_head(monkeypatch, eps + err, 0.3 * torch.randn(n, d))
    dl.terms(x0, torch.zeros(n, 4), torch.randint(1, 1000, (n,)), eps)["loss"].backward()
    torch.testing.assert_close(out.grad[:, :d], 2 * err / (n * d))
    assert out.grad[:, d:].abs().min() > 0

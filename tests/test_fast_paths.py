"""Fast paths equal the reference they replace: the top-k / top-p sampler, the preallocated KV cache, precomputed
conditioning, DropPath on the keep mask, MAR's batched diffusion sampler and DDIM, MAR's diffusion loss with one
condition and timestep embedding per token and timestep."""

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


# ------------------------------------------------------------------------------------------- backbone
def test_kv_cache_is_preallocated_and_grows_when_unsized():
    from genarena.generators.backbone import KVCache

    k = torch.randn(2, 3, 10, 4)
    v = torch.randn(2, 3, 10, 4)
    sized = KVCache(10)
    sized.append(k[:, :, :1], v[:, :, :1])
    ptr = sized.k.data_ptr()
    for a, b in ((1, 4), (4, 5), (5, 10)):
        keys, values = sized.append(k[:, :, a:b], v[:, :, a:b])
    assert sized.k.data_ptr() == ptr and len(sized) == 10  # written in place, never reallocated
    assert torch.equal(keys, k) and torch.equal(values, v)
    unsized = KVCache()
    for i in range(10):
        keys, values = unsized.append(k[:, :, i:i + 1], v[:, :, i:i + 1])
    assert torch.equal(keys, k) and torch.equal(values, v) and unsized.k.shape[2] < 20


@pytest.mark.parametrize("name", ["var", "ar"])
def test_sampling_with_precomputed_modulations_equals_the_plain_forward(name):
    """The decoders pass the blocks' modulations computed once; the blocks computing them give the same logits."""
    from .conftest import tiny_generator, token_batch

    gen, tok = tiny_generator(name)
    gen.eval()
    with torch.no_grad():  # AdaLN starts at zero: give the modulations weight so that using them shows
        for n, p in gen.named_parameters():
            if ".ada." in n:
                p.normal_(0, 0.2)
    tokens, labels = token_batch(tok, 3)
    cond, other = gen.class_embed(labels), gen.class_embed((labels + 1) % 10)
    x = torch.randn(3, 5, gen.width)
    t, head = gen.transformer, gen.head
    with torch.no_grad():
        plain = head(t(x, cond), cond)
        pre = head(t(x, cond, mods=t.modulations(cond)), cond, head.modulation(cond))
        wrong = head(t(x, cond, mods=t.modulations(other)), cond, head.modulation(other))
    torch.testing.assert_close(pre, plain, atol=0, rtol=0)
    assert not torch.allclose(wrong, plain)  # the precomputed modulations are what the blocks use


def test_drop_path_drops_whole_samples_at_rate_p_and_keeps_the_mean():
    from genarena.generators.backbone import DropPath

    torch.manual_seed(0)
    p, n = 0.3, 20_000
    dp = DropPath(p).train()
    x = torch.randn(n, 2, 3).abs() + 0.5
    y = dp(x)
    ratio = y / x
    dropped = (ratio == 0).all(-1).all(-1)
    kept = (ratio - 1 / (1 - p)).abs().lt(1e-6).all(-1).all(-1)
    assert bool((dropped | kept).all())  # each sample: its whole branch dropped, or kept and scaled by 1 / (1 - p)
    assert abs(dropped.double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)  # 4 sigma of the rate
    assert abs(ratio[:, 0, 0].mean().item() - 1) < 4 * math.sqrt(p / (1 - p) / n)  # unbiased: E[ratio] = 1
    base = torch.randn(n, 2, 3)
    torch.manual_seed(1)
    fused = dp.add(base, x)
    torch.manual_seed(1)
    torch.testing.assert_close(fused, base + dp(x), atol=1e-6, rtol=1e-6)
    assert torch.equal(dp.eval()(x), x) and torch.equal(dp.add(base, x), base + x)


def test_var_diagnostics_are_the_per_scale_means():
    from .conftest import tiny_generator, token_batch

    gen, tok = tiny_generator("var")
    tokens, labels = token_batch(tok, 4)
    out = gen.loss(tokens, labels)
    assert out["loss"].requires_grad and not out["acc"].requires_grad
    with torch.no_grad():
        logits = gen.eval()(tokens, labels)
    gen.train()
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none").view_as(tokens)
    correct = (logits.argmax(-1) == tokens).float()
    d = gen.diagnostics(ce, logits, tokens)
    torch.testing.assert_close(d["acc"], correct.mean())
    for k, (c, a) in enumerate(zip(ce.split(gen.block_sizes, 1), correct.split(gen.block_sizes, 1))):
        torch.testing.assert_close(d[f"loss_s{k}"], c.mean())
        torch.testing.assert_close(d[f"acc_s{k}"], a.mean())
    torch.testing.assert_close(d["loss_last"], ce.split(gen.block_sizes, 1)[-1].mean())


# ------------------------------------------------------------------------------------------- MAR's diffusion sampler
def tiny_diffloss(loss: str, seed: int = 0):
    """A small denoiser with every weight random (the init zeroes its output, which would make checks trivial)."""
    from genarena.generators.diffusion import DiffusionLoss

    torch.manual_seed(seed)
    dl = DiffusionLoss(token_dim=4, cond_dim=8, width=16, depth=2, timesteps=1000, batch_mul=1, schedule="cosine",
                       loss=loss).eval()
    with torch.no_grad():
        for p in dl.net.parameters():
            p.normal_(0, 0.3)
        dl.x0_bound.fill_(3.0)
    return dl


def recorded_noise(steps: int, n: int, d: int, seed: int = 1) -> list[torch.Tensor]:
    return list(torch.randn(steps, n, d, generator=torch.Generator().manual_seed(seed)).unbind(0))


@pytest.mark.parametrize("loss", ["eps", "learned_sigma"])
@pytest.mark.parametrize("cfg", [None, 1.5])
def test_batched_diffusion_sampler_is_the_p_sample_chain(loss, cfg):
    """The precomputed loop (condition embedded once, the chain's timestep embeddings in one batch, scalar
    coefficients, fused updates) gives the chain of reference :meth:`p_sample` steps on the same noise."""
    dl = tiny_diffloss(loss)
    n, steps, temperature = 5, 12, 0.9
    z = torch.randn(2 * n if cfg is not None else n, 8)
    noise = recorded_noise(steps, n, 4)
    with torch.no_grad():
        x = noise[0]
        for j, index in enumerate(reversed(range(steps))):
            x = dl.p_sample(x, z, steps=steps, index=index, temperature=temperature, cfg=cfg,
                            noise=noise[j + 1] if index > 0 else None)
        fast = dl.sample(z, steps=steps, temperature=temperature, cfg=cfg, noise=iter(noise))
    torch.testing.assert_close(fast, x, atol=1e-4, rtol=1e-4)


def test_ddim_with_eta_1_is_the_ddpm_chain():
    """Song et al.: DDIM's step with eta = 1 has DDPM's posterior mean and variance (on any respaced chain)."""
    dl = tiny_diffloss("eps")
    n, steps = 6, 20
    z = torch.randn(n, 8)
    noise = recorded_noise(steps, n, 4)
    with torch.no_grad():
        ddpm = dl.sample(z, steps=steps, temperature=1.0, cfg=None, noise=iter(noise))
        ddim = dl.sample(z, steps=steps, temperature=1.0, cfg=None, sampler="ddim", eta=1.0, noise=iter(noise))
        ddim0 = dl.sample(z, steps=steps, temperature=1.0, cfg=None, sampler="ddim", eta=0.0, noise=iter(noise))
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ddim0, ddpm, atol=1e-2)  # eta = 0 is another (deterministic) sampler


@pytest.mark.parametrize("loss", ["eps", "learned_sigma"])
def test_training_embeds_each_condition_and_timestep_once_with_the_per_row_loss_and_gradients(loss):
    """``batch_mul`` draws per token share one condition embedding and each distinct timestep is embedded once:
    the loss and every gradient equal the per-row reference (the repeated ``z`` and one embedding per row)."""
    from genarena.generators.diffusion import timestep_embedding

    dl = tiny_diffloss(loss)
    x0, z = torch.randn(5, 4), torch.randn(5, 8)
    k = 3
    t = torch.tensor([7, 7, 500, 0, 999] * k)  # repeated timesteps, within and across draws
    eps = torch.randn(5 * k, 4)

    fast = dl.terms(x0.repeat(k, 1), z, t, eps)
    fast["loss"].backward()
    grads = {n: p.grad.clone() for n, p in dl.named_parameters()}
    dl.zero_grad()

    net = dl.net  # the reference: every row embedded on its own
    per_row = lambda x, t_, z_: net.run(x, net.time_embed(timestep_embedding(t_, net.FREQ_DIM)) + net.cond_embed(z_))
    net.forward = per_row
    ref = dl.terms(x0.repeat(k, 1), z.repeat(k, 1), t, eps)
    ref["loss"].backward()
    torch.testing.assert_close(fast["loss"], ref["loss"])
    torch.testing.assert_close(fast["mse"], ref["mse"])
    for n, p in dl.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, msg=n)
    with pytest.raises(ValueError, match="do not divide"):
        net.condition(torch.randn(4, 8), t)


class TrueEps(torch.nn.Module):
    """A stand-in denoiser that predicts the true noise of ``x_t`` for fixed clean tokens ``x0``:
    ``eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)``. The timestep travels through the condition."""

    def __init__(self, x0: torch.Tensor, abar: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.abar, self.token_dim = x0, abar, x0.shape[1]

    def cond_embed(self, z):
        return torch.zeros(z.shape[0], 1, dtype=torch.float64)

    def time_cond(self, t):
        return t.double()[:, None]  # (S, 1)

    def run(self, x, c):
        a = self.abar[c[:, 0].long()][:, None]
        return (x - a.sqrt() * self.x0) / (1 - a).sqrt()


@pytest.mark.parametrize("steps", [1, 5, 50])
def test_deterministic_ddim_recovers_x0_when_eps_is_exact(steps):
    """With eta = 0 and the true eps at every step, each DDIM step stays on the line from x0 through the start
    noise, and the last step lands on x0 exactly (up to float rounding), for any number of steps."""
    dl = tiny_diffloss("eps")
    dl.x0_bound.zero_()  # no clipping
    x0 = torch.randn(7, 4, dtype=torch.float64)
    dl.net = TrueEps(x0, torch.cumprod(1 - dl.betas, 0))
    start = torch.randn(7, 4, dtype=torch.float64)
    out = dl.sample(torch.zeros(7, 8), steps=steps, temperature=1.0, cfg=None, sampler="ddim", eta=0.0,
                    noise=iter([start]))
    torch.testing.assert_close(out, x0, atol=1e-8, rtol=1e-8)


def test_mar_samples_with_ddim_from_the_config():
    from genarena.config import validate
    from genarena.errors import ConfigError

    from .conftest import compose_cfg, tiny_generator

    gen, tok = tiny_generator("mar")
    gen.eval()
    out = gen.sample(torch.arange(2), cfg=1.0, cfg_schedule="linear", temperature=1.0, top_k=0, top_p=0.0, steps=4,
                     diffusion_steps=5, sampler="ddim", eta=0.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, tok.seq_len, tok.token_dim) and torch.isfinite(out).all()
    assert compose_cfg(["generator=mar"]).generator.sampling.sampler == "ddpm"  # the paper's stays the default
    for bad, needle in (("generator.sampling.sampler=euler", "ddpm, ddim"), ("generator.sampling.eta=1.5", "eta")):
        with pytest.raises(ConfigError, match=needle):
            validate(compose_cfg(["generator=mar", bad]))


def test_a_mar_checkpoint_from_before_the_sampler_option_loads_with_ddpm_and_takes_ddim(tmp_path):
    from genarena.generators import load_generator
    from genarena.generators.generate import merge_sampling

    from .conftest import GENERATOR_CFGS, KL_CFG, tiny_generator

    gen, tok = tiny_generator("mar")
    old_cfg = {**GENERATOR_CFGS["mar"], "sampling": {k: v for k, v in GENERATOR_CFGS["mar"]["sampling"].items()
                                                      if k not in ("sampler", "eta")}}
    sd = {**{f"tokenizer.{k}": v for k, v in tok.state_dict().items()},
          **{f"generator.{k}": v for k, v in gen.state_dict().items()}}
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": sd, "global_step": 1, "hyper_parameters": {
        "role": "generator", "generator": old_cfg, "tokenizer": KL_CFG, "data": {"channels": 1, "resolution": 32},
        "num_classes": 10}}, path)
    _, _, hp = load_generator(path)
    assert hp["generator"]["sampling"]["sampler"] == "ddpm" and hp["generator"]["sampling"]["eta"] == 0.0
    assert merge_sampling(hp["generator"]["sampling"], {"sampler": "ddim"})["sampler"] == "ddim"


# ------------------------------------------------------------------------------------------- dropout
def test_cpu_dropout_mask_keeps_at_the_rate_and_the_scale_keeps_the_mean():
    from genarena.generators.dropout import LEVELS, dropout, keep_mask

    mask, keep = keep_mask((1000, 1000), 0.1, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == (1000, 1000)
    assert keep == round(0.9 * LEVELS) / LEVELS and abs(keep - 0.9) < 1 / LEVELS
    sd = math.sqrt(keep * (1 - keep) / mask.numel())
    assert abs(mask.float().mean().item() - keep) < 5 * sd
    x = torch.randn(1000, 1000)
    torch.manual_seed(1)
    out = dropout(x, 0.1, True)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / keep)  # kept elements scaled by 1 / P(keep), others 0
    assert abs(dropout(torch.ones(1000, 1000), 0.1, True).mean().item() - 1.0) < 5 * sd / keep
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.1, True), out)  # seeded by torch's generator
    assert dropout(x, 0.1, False) is x and dropout(x, 0.0, True) is x
    assert abs(keep_mask((4001,), 0.5)[0].float().mean().item() - 0.5) < 0.05  # an odd size (not a multiple of 4)
    with pytest.raises(ValueError, match="p=1.0"):
        keep_mask((3,), 1.0)


def test_cpu_dropout_draws_every_16_bit_lane_uniformly():
    """Four 16-bit uniforms per 64-bit draw: each lane, the top one with the word's sign bit included, is uniform
    (a draw over [0, 2^63) only would make the top lane non-negative, so it would keep every element at p < 0.5)."""
    from genarena.generators.dropout import keep_mask

    mask, keep = keep_mask((4 * 50_000,), 0.5, torch.Generator().manual_seed(0))
    lanes = mask.view(-1, 4).float().mean(0)
    assert torch.all((lanes - keep).abs() < 0.01), lanes


def test_attention_dropout_is_sdpa_with_the_cpu_mask(monkeypatch):
    """With the keep mask forced to all-kept, attention with dropout is SDPA without dropout, for bool and float
    masks and either scale; with a real mask the model's attention takes this path in training on the CPU."""
    import genarena.generators.dropout as dropout_module
    from genarena.generators.backbone import Attention, block_causal_mask

    q, k, v = torch.randn(3, 2, 2, 6, 8).unbind(0)
    bool_mask = torch.rand(6, 6) > 0.3
    bool_mask[:, 0] = True
    float_mask = torch.randn(6, 6)
    all_kept = lambda shape, p, generator=None: (torch.ones(shape, dtype=torch.bool), 1.0)  # noqa: E731
    monkeypatch.setattr(dropout_module, "keep_mask", all_kept)
    for mask in (None, bool_mask, float_mask):
        for scale in (None, 0.7):
            ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
            out = dropout_module.attention_with_dropout(q, k, v, mask, scale, 0.1)
            torch.testing.assert_close(out, ref)
    monkeypatch.undo()

    calls = []
    real = dropout_module.attention_with_dropout
    monkeypatch.setattr(dropout_module, "attention_with_dropout", lambda *a: calls.append(a[-1]) or real(*a))
    attn = Attention(16, 2, qk_norm=True, dropout=0.25).train()
    attn(torch.randn(2, 5, 16), block_causal_mask([1, 4]))
    attn.eval()(torch.randn(2, 5, 16))
    assert calls == [0.25]  # training only


def test_every_dropout_of_the_generators_uses_the_cpu_mask():
    from genarena.generators.dropout import Dropout

    from .conftest import tiny_generator

    for name, over in (("mar", {"backbone": "vit", "dropout": 0.1}), ("ar", {"backbone": "llama", "dropout": 0.1}),
                       ("var", {"dropout": 0.1})):
        gen, _ = tiny_generator(name, **over)
        drops = [m for m in gen.modules() if isinstance(m, torch.nn.Dropout)]
        assert drops and all(isinstance(m, Dropout) for m in drops), (name, drops)

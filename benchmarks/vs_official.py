"""genarena against the official code, side by side: VAR (FoundationVision/VAR) and MAR (LTH14/mar) at equal configs.

Both sides hold the same network with the same weights: the official model is built from its own repository, its
state dict goes through genarena's converter (``genarena.official``), and genarena's generator is built from the
converted config (the parity tests pin that the two then compute the same function). Parameter counts are checked
equal. Both run in this process, alternating (the order flips every round), on the CPU in fp32 with ``--threads``
threads; each figure is the seconds of one call, and a ratio is genarena / official (below 1: genarena is faster).

- VAR: depth 4 (width 256, 4 heads), scales 1,2,3,4,6,8, vocabulary 4096, 1000 classes; a training step at batch 16
  (teacher-forcing inputs, forward, cross-entropy, backward, gradient clipping at 2, AdamW; the official side as its
  trainer does it, with its per-step argmax), the forward pass with loss (no grad), and sampling at batch 1 and 16
  with CFG 1.5 ramped over scales, top-k 900, top-p 0.96 (tokens only: the official sampler's final VQVAE decode is
  skipped, as genarena's ``sample`` returns tokens).
- MAR: width 256, 2 + 2 ViT blocks, a 3-block denoiser of width 256 with the learned variance, buffer 64, 8x8 tokens
  of 16 dims, 1000 classes; training step at batch 16, forward, and sampling at batch 1 and 16 with 16 steps x 100
  diffusion steps, CFG 2 (MAR's cfg; genarena's w = 1) ramped linearly. Also genarena's DDIM (25 steps, eta 0), which
  has no official counterpart (its ratio is against the official DDPM-100 run; the report also gives it against
  genarena's DDPM-100 in the same rounds).
- ``torch.compile``: genarena's VAR and MAR training steps with the loss compiled (what ``trainer.compile=true``
  does), alternating with the same step eagerly and with the official step (``--no-compile`` skips it; a compiler
  failure is written into the report, not raised).
- Peak: the best rate of a 2048 x 2048 fp32 matmul in this process, and the training rate of VAR at depth 8
  (width 512) and batch 64 as a share of it (analytic FLOPs, ``flops_per_image``), both sides.

Getting the official code (nothing of it is committed here) and what it imports::

    git clone https://github.com/FoundationVision/VAR official/VAR
    git clone https://github.com/LTH14/mar official/mar
    pip install timm==0.9.12 huggingface_hub      # MAR imports timm's ViT block, VAR's model huggingface_hub
    python benchmarks/vs_official.py --var-repo official/VAR --mar-repo official/mar [--rounds 5] [--threads 2]

Run it on an otherwise idle machine: where other jobs leave fewer free cores than ``--threads``, the threads wait on
each other and single calls take several times longer (one round's ratio then says little).

``--quick`` runs one round with training at batch 4 and one depth-8 step per side (a smoke test; its figures are not
the benchmark's). Writes
``vs_official.json`` / ``.md`` into ``--out`` (default: this folder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = Path(__file__).resolve().parent
VAR_CFG = {"depth": 4, "patch_nums": (1, 2, 3, 4, 6, 8), "vocab_size": 4096, "Cvae": 32, "num_classes": 1000,
           "cfg": 1.5, "top_k": 900, "top_p": 0.96}
VAR_PEAK_DEPTH, VAR_PEAK_BATCH = 8, 64
MAR_CFG = {"img_size": 128, "vae_stride": 16, "patch_size": 1, "encoder_embed_dim": 256, "encoder_depth": 2,
           "encoder_num_heads": 4, "decoder_embed_dim": 256, "decoder_depth": 2, "decoder_num_heads": 4,
           "mlp_ratio": 4.0, "vae_embed_dim": 16, "mask_ratio_min": 0.7, "label_drop_prob": 0.1, "class_num": 1000,
           "attn_dropout": 0.1, "proj_dropout": 0.1, "buffer_size": 64, "diffloss_d": 3, "diffloss_w": 256,
           "num_sampling_steps": "100", "diffusion_batch_mul": 4}
MAR_SAMPLING = {"steps": 16, "diffusion_steps": 100, "cfg": 2.0}  # cfg: MAR's (1 + w)
DDIM = {"sampler": "ddim", "eta": 0.0, "diffusion_steps": 25}
LR, CLIP = 1e-4, 2.0


# ------------------------------------------------------------------------------------------- official imports
@contextlib.contextmanager
def official_repo(path: Path):
    """Import from ``path`` (VAR and MAR both name their package ``models``: each import gets its own)."""
    path = path.resolve()
    if not path.is_dir():
        raise SystemExit(f"{path} is not a directory: pass a work tree of the official repository (git clone ...)")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in ("models", "diffusion", "util")}
    for k in saved:
        del sys.modules[k]
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        for k in [k for k in sys.modules if k.split(".")[0] in ("models", "diffusion", "util")]:
            del sys.modules[k]
        sys.modules.update(saved)


def adamw(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, betas=(0.9, 0.95),
                             weight_decay=0.05)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------- VAR
def build_var(repo: Path, depth: int) -> dict[str, Any]:
    """The official VAR (with a VQVAE holding its quantizer) and genarena's ``var`` with the same weights."""
    from genarena.generators import build_generator
    from genarena.official.var_transformer import OFFICIAL_INIT, build_rule, convert_var_transformer
    from genarena.official.var_vqvae import convert_var_quantizer
    from genarena.tokenizers import MSVQTokenizer

    c = VAR_CFG
    with official_repo(repo):
        from models import VAR, VQVAE
        from models.helpers import sample_with_top_k_top_p_  # noqa: F401 (imported by models.var)

        torch.manual_seed(0)
        # the VQVAE's encoder and decoder are never run here (only its quantizer): built narrow to save memory
        vae = VQVAE(vocab_size=c["vocab_size"], z_channels=c["Cvae"], ch=32, test_mode=True, share_quant_resi=4,
                    quant_resi=0.5, v_patch_nums=c["patch_nums"])
        rule = build_rule(depth)
        official = VAR(vae_local=vae, num_classes=c["num_classes"], depth=depth, embed_dim=rule["width"],
                       num_heads=rule["heads"], mlp_ratio=4.0, drop_rate=0.0, attn_drop_rate=0.0,
                       drop_path_rate=rule["drop_path"], norm_eps=1e-6, shared_aln=False, cond_drop_rate=0.1,
                       attn_l2_norm=True, patch_nums=c["patch_nums"], flash_if_available=False,
                       fused_if_available=False)
        official.init_weights(**OFFICIAL_INIT, init_std=-1)
    vae.fhat_to_img = lambda f_hat: f_hat  # sampling returns the token map's features, not decoded images
    q_sd = {f"quantize.{k}": v for k, v in vae.quantize.state_dict().items()}
    kwargs, q_converted = convert_var_quantizer(q_sd, list(c["patch_nums"]), 0.5)
    kwargs.pop("dim")
    tok = MSVQTokenizer(image_channels=3, resolution=c["patch_nums"][-1], ch=8, ch_mult=[1], num_res_blocks=1,
                        z_channels=c["Cvae"], net="genarena", ldm=None, **kwargs)
    tok.quantizer.load_state_dict(q_converted)
    tok.eval().requires_grad_(False)
    cfg, sd = convert_var_transformer(official.state_dict(), patch_nums=list(c["patch_nums"]))
    ours = build_generator(cfg, tok, c["num_classes"])
    ours.load_state_dict(sd)
    return {"official": official, "ours": ours, "vae": vae, "tok": tok}


def var_data(m: dict, batch: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    per_scale = [torch.randint(0, VAR_CFG["vocab_size"], (batch, pn * pn), generator=g) for pn in VAR_CFG["patch_nums"]]
    labels = torch.randint(0, VAR_CFG["num_classes"], (batch,), generator=g)
    return per_scale, torch.cat(per_scale, 1), labels


def var_cases(m: dict, batch: int, sample_batch: int) -> dict[str, dict[str, Callable[[], Any]]]:
    official, ours, quant = m["official"], m["ours"], m["vae"].quantize
    per_scale, tokens, labels = var_data(m, batch, 0)
    v = VAR_CFG["vocab_size"]
    L = tokens.shape[1]
    loss_weight = torch.full((1, L), 1.0 / L)
    opt_o, opt_g = adamw(official), adamw(ours)

    def official_loss() -> torch.Tensor:
        x = quant.idxBl_to_var_input(per_scale)
        logits = official(labels, x)
        loss = F.cross_entropy(logits.view(-1, v), tokens.view(-1), reduction="none").view(batch, -1)
        return loss.mul(loss_weight).sum(-1).mean(), logits

    def official_train() -> None:
        official.train()
        loss, logits = official_loss()
        opt_o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(official.parameters(), CLIP)
        opt_o.step()
        logits.data.argmax(dim=-1)  # the official trainer's per-step prediction

    def ours_train() -> None:
        ours.train()
        loss = ours.loss(tokens, labels)["loss"]
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ours.parameters(), CLIP)
        opt_g.step()

    @torch.no_grad()
    def official_forward() -> None:
        official.eval()
        official.cond_drop_rate, saved = 0.0, official.cond_drop_rate
        official_loss()
        official.cond_drop_rate = saved

    @torch.no_grad()
    def ours_forward() -> None:
        ours.eval()
        ours.loss(tokens, labels)

    def sampling(b: int) -> dict[str, Callable[[], Any]]:
        lab = labels[:b] if b <= batch else torch.arange(b) % VAR_CFG["num_classes"]  # (b,)

        @torch.no_grad()
        def off() -> None:
            official.eval()
            official.autoregressive_infer_cfg(B=b, label_B=lab, g_seed=0, cfg=VAR_CFG["cfg"], top_k=VAR_CFG["top_k"],
                                              top_p=VAR_CFG["top_p"])

        @torch.no_grad()
        def gen() -> None:
            ours.eval()
            ours.sample(lab, cfg=VAR_CFG["cfg"], cfg_schedule="linear", temperature=1.0, top_k=VAR_CFG["top_k"],
                        top_p=VAR_CFG["top_p"], generator=torch.Generator().manual_seed(0))

        return {"official": off, "genarena": gen}

    m["loss"] = lambda: ours.loss(tokens, labels)["loss"]  # for the torch.compile arm
    return {f"VAR train step (batch {batch})": {"official": official_train, "genarena": ours_train},
            f"VAR forward + loss (batch {batch})": {"official": official_forward, "genarena": ours_forward},
            "VAR sampling (batch 1)": sampling(1), f"VAR sampling (batch {sample_batch})": sampling(sample_batch)}


def train_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[[], torch.Tensor]) -> None:
    """One optimisation step as both trainers take it: loss, backward, gradient clipping at ``CLIP``, AdamW."""
    model.train()
    loss = loss_fn()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    opt.step()


def compile_case(ours: nn.Module, loss: Callable[[], torch.Tensor],
                 log) -> tuple[dict[str, Callable[[], Any]] | None, str | None]:
    """genarena's training step (``loss()``: forward and loss, as ``trainer.compile=true`` compiles it; backward
    through AOTAutograd) under ``torch.compile`` and eagerly, with one optimizer. Compiles in the first call; returns
    ``(None, error)`` where compiling or the first compiled step fails (no C++ compiler, an unsupported op, ...)."""
    opt = adamw(ours)
    step = partial(train_step, ours, opt)

    t0 = time.perf_counter()
    try:
        compiled_loss = torch.compile(loss)
        step(compiled_loss)
    except Exception as e:  # noqa: BLE001 (any compiler failure is a result to report, not a crash)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"{type(e).__name__}: {first[:300]}"
    log(f"torch.compile: the first compiled training step took {time.perf_counter() - t0:.1f} s")
    return {"compiled": lambda: step(compiled_loss), "eager": lambda: step(loss)}, None


# ------------------------------------------------------------------------------------------- MAR
def build_mar(repo: Path) -> dict[str, Any]:
    from genarena.generators import build_generator
    from genarena.official.mar_model import convert_mar
    from genarena.tokenizers import build_tokenizer

    with official_repo(repo):
        torch.Tensor.cuda = lambda self, *a, **k: self  # the official code calls .cuda() throughout
        from models.mar import MAR

        torch.manual_seed(0)
        official = MAR(norm_layer=partial(nn.LayerNorm, eps=1e-6), **MAR_CFG)
    cfg, sd = convert_mar(official.state_dict(), heads=MAR_CFG["encoder_num_heads"])
    grid = MAR_CFG["img_size"] // MAR_CFG["vae_stride"]
    tok = build_tokenizer({"name": "kl", "ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
                           "z_channels": MAR_CFG["vae_embed_dim"], "kl_weight": 1e-4, "scale_factor": None},
                          image_channels=3, resolution=4 * grid).eval().requires_grad_(False)
    ours = build_generator(cfg, tok, MAR_CFG["class_num"])
    ours.load_state_dict(sd, strict=True)
    return {"official": official, "ours": ours, "tok": tok}


class FixedRatio:
    """Stands in for MAR's truncated-normal mask-ratio generator (``rvs``): one fixed ratio."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def rvs(self, n: int) -> list[float]:
        return [self.ratio] * n


def mar_cases(m: dict, batch: int, sample_batch: int) -> dict[str, dict[str, Callable[[], Any]]]:
    from genarena.generators.mar import truncnorm_mean

    official, ours = m["official"], m["ours"]
    # the training mask ratio fixed at the truncated normal's mean on both sides: the same work in every call
    ratio = truncnorm_mean(MAR_CFG["mask_ratio_min"])
    official.mask_ratio_generator = FixedRatio(ratio)
    ours.draw_mask_ratio = lambda: ratio
    g = torch.Generator().manual_seed(0)
    grid, d = MAR_CFG["img_size"] // MAR_CFG["vae_stride"], MAR_CFG["vae_embed_dim"]
    latents = torch.randn(batch, d, grid, grid, generator=g)  # the official input: (B, D, h, w)
    tokens = official.patchify(latents)  # genarena's: (B, L, D)
    labels = torch.randint(0, MAR_CFG["class_num"], (batch,), generator=g)
    sample_labels = torch.randint(0, MAR_CFG["class_num"], (sample_batch,), generator=g)
    opt_o, opt_g = adamw(official), adamw(ours)
    step = train_step

    @torch.no_grad()
    def official_forward() -> None:
        official.eval()
        official(latents, labels)

    @torch.no_grad()
    def ours_forward() -> None:
        ours.eval()
        ours.loss(tokens, labels)

    def sampling(b: int, ddim: bool = False) -> dict[str, Callable[[], Any]]:
        lab = sample_labels[:b]
        s = MAR_SAMPLING

        @torch.no_grad()
        def off() -> None:
            official.eval()
            official.sample_tokens(b, num_iter=s["steps"], cfg=s["cfg"], cfg_schedule="linear", labels=lab,
                                   temperature=1.0)

        @torch.no_grad()
        def gen() -> None:
            ours.eval()
            extra = DDIM if ddim else {"diffusion_steps": s["diffusion_steps"]}
            ours.sample(lab, cfg=s["cfg"] - 1, cfg_schedule="linear", temperature=1.0, top_k=0, top_p=0.0,
                        steps=s["steps"], generator=torch.Generator().manual_seed(0), **extra)

        return {"official": off, "genarena": gen}

    m["loss"] = lambda: ours.loss(tokens, labels)["loss"]  # for the torch.compile arm
    return {f"MAR train step (batch {batch})": {"official": lambda: step(official, opt_o,
                                                                          lambda: official(latents, labels)),
                                                  "genarena": lambda: step(ours, opt_g,
                                                                           lambda: ours.loss(tokens, labels)["loss"])},
            f"MAR forward + loss (batch {batch})": {"official": official_forward, "genarena": ours_forward},
            "MAR sampling (batch 1)": sampling(1), f"MAR sampling (batch {sample_batch})": sampling(sample_batch),
            f"MAR sampling, genarena DDIM-25 (batch {sample_batch})": sampling(sample_batch, ddim=True)}


# ------------------------------------------------------------------------------------------- timing
def matmul_peak(repeats: int, n: int = 2048) -> float:
    """The best GFLOP/s of an ``n x n`` fp32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def peak_share_rounds(sides: dict[str, Callable[[], Any]], rounds: int, flops: float, log) -> dict[str, Any]:
    """Training steps of both sides, each right after a matmul-peak measurement (the machine's state changes over a
    run: the share uses the peak measured next to the step). Returns times, peaks and the best share per side."""
    out: dict[str, Any] = {"genarena_s": [], "official_s": [], "genarena_peak": [], "official_peak": []}
    for fn in sides.values():
        fn()
    for r in range(rounds):
        for side in (("genarena", "official") if r % 2 == 0 else ("official", "genarena")):
            out[f"{side}_peak"].append(matmul_peak(3))
            out[f"{side}_s"].append(timed(sides[side]))
            log(f"peak round {r}: {side} {out[f'{side}_s'][-1]:.2f} s at a matmul peak of "
                f"{out[f'{side}_peak'][-1]:.1f} GFLOP/s")
    for side in ("genarena", "official"):
        shares = [flops / t / 1e9 / p for t, p in zip(out[f"{side}_s"], out[f"{side}_peak"])]
        out[f"{side}_shares"] = shares
        out[f"{side}_share"] = max(shares)
    return out


def timed(fn: Callable[[], Any]) -> float:
    torch.manual_seed(0)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_rounds(cases: dict[str, dict[str, Callable[[], Any]]], rounds: int, log,
               warm: bool = True) -> dict[str, dict[str, list[float]]]:
    """Each case (two sides): one warm-up call per side (unless ``warm=False``: done already), then ``rounds``
    rounds, the first side first in even rounds."""
    times = {name: {side: [] for side in sides} for name, sides in cases.items()}
    if warm:
        for sides in cases.values():
            for fn in sides.values():
                fn()
    for r in range(rounds):
        for name, sides in cases.items():
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for side in order:
                times[name][side].append(timed(sides[side]))
            log(f"round {r}: {name}: " + ", ".join(f"{side} {times[name][side][-1]:.3f} s" for side in sides))
    return times


def summarise(times: dict[str, list[float]], num: str = "genarena", den: str = "official") -> dict[str, float]:
    """Best and median seconds per side, and the ratio ``num / den``: of the best times, and per round (median,
    min, max)."""
    g, o = times[num], times[den]
    per_round = [a / b for a, b in zip(g, o)]
    return {f"{num}_min": min(g), f"{num}_median": statistics.median(g), f"{den}_min": min(o),
            f"{den}_median": statistics.median(o), "ratio_of_min": min(g) / min(o),
            "ratio_median": statistics.median(per_round), "ratio_min": min(per_round), "ratio_max": max(per_round)}


PROFILED = ("VAR sampling (batch {sb})", "VAR train step (batch {b})", "MAR train step (batch {b})")


def profile_case(sides: dict[str, Callable[[], Any]], top: int = 8) -> dict[str, list[dict[str, Any]]]:
    """Where one call's time goes, per side: the ``top`` operators by self CPU time (``torch.profiler``), each with
    its share of the call's total self time."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    for side, fn in sides.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
        out[side] = [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
                      "share": e.self_cpu_time_total / total} for e in events[:top]]
    return out


# ------------------------------------------------------------------------------------------- report
FLOORS = {  # the floors: genarena / official at most this
    "VAR sampling": 0.7, "VAR train step": 0.95, "MAR train step": 0.85, "MAR sampling": 0.85}


def floor_of(case: str) -> float | None:
    if "DDIM" in case:
        return None
    return next((v for k, v in FLOORS.items() if case.startswith(k)), None)


def write_report(out: Path, results: dict[str, Any]) -> None:
    (out / "vs_official.json").write_text(json.dumps(results, indent=2) + "\n")
    meta = results["meta"]
    lines = [
        "# genarena vs the official code (CPU, fp32)", "",
        "Same networks and weights on both sides (official model -> genarena's converter), equal parameter counts, "
        f"alternating in one process over {meta['rounds']} rounds, {meta['threads']} threads. Seconds per call; "
        "ratio = genarena / official (below 1: genarena faster): the ratio of the best times, and the median and "
        "range of the per-round ratios. How to re-run and what each case times: the docstring of "
        "`benchmarks/vs_official.py`.", "",
        f"Conditions: {meta['conditions']}", "",
        f"- {meta['hardware']}; torch {meta['torch']}; official code VAR {meta['var_commit']}, MAR "
        f"{meta['mar_commit']}; {meta['total_min']:.1f} min in all.",
        f"- Parameters: VAR {meta['params']['var']['genarena']:,} (genarena) / {meta['params']['var']['official']:,}"
        f" (official); MAR {meta['params']['mar']['genarena']:,} / {meta['params']['mar']['official']:,}.", "",
        "| case | genarena best / median s | official best / median s | ratio of best | per-round ratio median "
        "[min, max] | floor |",
        "|---|---|---|---|---|---|",
    ]
    for case, s in results["cases"].items():
        floor = floor_of(case)
        verdict = "-" if floor is None else f"<= {floor}: {'met' if s['ratio_median'] <= floor else 'NOT met'}"
        lines.append(f"| {case} | {s['genarena_min']:.3f} / {s['genarena_median']:.3f} | {s['official_min']:.3f} / "
                     f"{s['official_median']:.3f} | {s['ratio_of_min']:.2f} | {s['ratio_median']:.2f} "
                     f"[{s['ratio_min']:.2f}, {s['ratio_max']:.2f}] | {verdict} |")
    p = results["peak"]
    lines += ["", "Matmul peak measured in this run (2048 x 2048 fp32, best of 3 before and after the rounds): "
              f"{p['matmul_gflops']:.1f} GFLOP/s."]
    if p.get("train_gflop_per_step"):
        per_step = "; ".join(
            f"{side} " + ", ".join(f"{t:.2f} s at {pk:.0f} GFLOP/s = {sh:.0%}" for t, pk, sh in zip(
                p[f"{side}_s"], p[f"{side}_peak"], p[f"{side}_shares"])) for side in ("genarena", "official"))
        lines += [
            f"VAR depth {VAR_PEAK_DEPTH} (width {64 * VAR_PEAK_DEPTH}) training at batch {VAR_PEAK_BATCH}, "
            f"{p['train_gflop_per_step']:.0f} GFLOP per step (analytic, `flops_per_image`), each step right after a "
            "matmul-peak measurement (the share uses that peak): best share genarena "
            f"{p['genarena_share']:.0%}, official {p['official_share']:.0%} (floor >= 70%: "
            f"{'met' if p['genarena_share'] >= 0.7 else 'NOT met'}). Per step: {per_step}.",
        ]
    d = results.get("ddim_vs_ddpm")
    if d:
        lines += ["", f"MAR, genarena's DDIM ({DDIM['diffusion_steps']} steps, eta {DDIM['eta']}) against its DDPM "
                  f"({MAR_SAMPLING['diffusion_steps']} steps), sampling at batch {d['batch']} in the same rounds: "
                  f"{d['ddim_min']:.3f} s vs {d['ddpm_min']:.3f} s (best), per-round ratio median "
                  f"{d['ratio_median']:.2f} [{d['ratio_min']:.2f}, {d['ratio_max']:.2f}]. Its sample quality (FID "
                  "against the DDPM default) is not measured here (random weights)."]
    for label, c in (results.get("compile") or {}).items():
        if c.get("error"):
            lines += ["", f"`torch.compile` of genarena's {label} training step (batch {c['batch']}): failed on this "
                      f"machine, so not timed: `{c['error']}`."]
            continue
        e, o = c["vs_eager"], c["vs_official"]
        floor = FLOORS[f"{label} train step"]
        lines += ["", f"`torch.compile` of genarena's {label} training step (`trainer.compile=true`: the loss "
                  f"compiled, backward through AOTAutograd; batch {c['batch']}), alternating with the same step "
                  f"eagerly and the official step over {len(c['compiled_s'])} rounds, after a compiling call of "
                  f"{c['first_step_s']:.1f} s: compiled {e['compiled_min']:.3f} / {e['compiled_median']:.3f} s, eager "
                  f"{e['eager_min']:.3f} / {e['eager_median']:.3f} s, official {o['official_min']:.3f} / "
                  f"{o['official_median']:.3f} s (best / median). Compiled / eager: ratio of best "
                  f"{e['ratio_of_min']:.2f}, per-round median {e['ratio_median']:.2f} [{e['ratio_min']:.2f}, "
                  f"{e['ratio_max']:.2f}]. **Compiled / official: ratio of best {o['ratio_of_min']:.2f}, per-round "
                  f"median {o['ratio_median']:.2f} [{o['ratio_min']:.2f}, {o['ratio_max']:.2f}]** (floor <= "
                  f"{floor}: {'met' if o['ratio_median'] <= floor else 'NOT met'})."]
    for name, sides in (results.get("profiles") or {}).items():
        lines += ["", f"Where the time of one call goes, {name}: the top operators by self CPU time "
                  "(`torch.profiler`), share of the call's total self time.", "",
                  "| # | " + " | ".join(f"{side} operator | calls | share" for side in sides) + " |",
                  "|---|" + "---|---|---|" * len(sides)]
        for i in range(max(len(ops) for ops in sides.values())):
            cells = []
            for ops in sides.values():
                e = ops[i] if i < len(ops) else None
                cells.append(" |  | " if e is None else f"`{e['op']}` | {e['calls']} | {e['share']:.1%}")
            lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    (out / "vs_official.md").write_text("\n".join(lines) + "\n")


def commit_of(repo: Path) -> str:
    head = repo / ".git" / "HEAD"
    if not head.is_file():
        return "unknown (not a git clone)"
    ref = head.read_text().strip()
    if ref.startswith("ref: "):
        target = repo / ".git" / ref[5:]
        return target.read_text().strip()[:7] if target.is_file() else ref[5:]
    return ref[:7]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--var-repo", type=Path, required=True, help="work tree of FoundationVision/VAR")
    parser.add_argument("--mar-repo", type=Path, required=True, help="work tree of LTH14/mar")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="batch of the training step and forward cases")
    parser.add_argument("--sample-batch", type=int, default=16, help="the larger sampling batch (the other is 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile arm")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator profiles")
    parser.add_argument("--peak-rounds", type=int, default=2, help="timed depth-8 training steps per side")
    parser.add_argument("--only", choices=["var", "mar"], default=None)
    parser.add_argument("--quick", action="store_true",
                        help="one round, training at batch 4, one depth-8 step per side: a smoke test")
    parser.add_argument("--conditions", default="", help="a note on the machine's state, copied into the report")
    parser.add_argument("--var-commit", default=None, help="the official VAR commit (default: read from the clone)")
    parser.add_argument("--mar-commit", default=None, help="the official MAR commit (default: read from the clone)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.batch, args.peak_rounds = 1, 4, min(args.peak_rounds, 1)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)  # noqa: E731

    cases: dict[str, dict[str, Callable[[], Any]]] = {}
    params: dict[str, dict[str, int]] = {}
    if args.only in (None, "var"):
        var = build_var(args.var_repo, VAR_CFG["depth"])
        params["var"] = {"genarena": var["ours"].num_params(), "official": num_params(var["official"])}
        cases.update(var_cases(var, args.batch, args.sample_batch))
    if args.only in (None, "mar"):
        mar = build_mar(args.mar_repo)
        params["mar"] = {"genarena": mar["ours"].num_params(), "official": num_params(mar["official"])}
        cases.update(mar_cases(mar, args.batch, args.sample_batch))
    for name, p in params.items():
        if p["genarena"] != p["official"]:
            raise SystemExit(f"{name}: parameter counts differ ({p}); the comparison needs equal networks")
    log(f"built; parameters {params}")

    peaks = [matmul_peak(3)]
    times = run_rounds(cases, args.rounds, log)
    peaks.append(matmul_peak(3))
    profiles = {}
    if not args.no_profile:
        for name in (p.format(b=args.batch, sb=args.sample_batch) for p in PROFILED):
            if name in cases:
                profiles[name] = profile_case(cases[name])
                log(f"profiled {name}")
    compiled: dict[str, Any] = {}
    models = {"VAR": var if args.only in (None, "var") else None, "MAR": mar if args.only in (None, "mar") else None}
    for label, m in models.items():
        if args.no_compile or m is None:
            continue
        t0 = time.perf_counter()
        sides, error = compile_case(m["ours"], m["loss"], log)
        c = compiled[label] = {"batch": args.batch, "error": error, "first_step_s": time.perf_counter() - t0}
        if sides is None:
            log(f"torch.compile of {label} failed: {error}")
            continue
        sides["eager"]()  # the compiled side was warmed up by compiling
        official = cases[f"{label} train step (batch {args.batch})"]["official"]
        name = f"{label} compile"
        c_times = run_rounds({name: {**sides, "official": official}}, args.rounds, log, warm=False)[name]
        c.update(vs_eager=summarise(c_times, "compiled", "eager"),
                 vs_official=summarise(c_times, "compiled", "official"),
                 **{f"{side}_s": t for side, t in c_times.items()})

    peak: dict[str, Any] = {"matmul_gflops": max(peaks), "rounds": args.peak_rounds}
    if args.peak_rounds and args.only in (None, "var"):
        del var
        big = build_var(args.var_repo, VAR_PEAK_DEPTH)
        sides = var_cases(big, VAR_PEAK_BATCH, 1)[f"VAR train step (batch {VAR_PEAK_BATCH})"]
        flops = big["ours"].flops_per_image(True) * VAR_PEAK_BATCH
        shares = peak_share_rounds(sides, args.peak_rounds, flops, log)
        peak.update(shares, train_gflop_per_step=flops / 1e9)
    from genarena.comparison.pipeline import hardware

    results = {
        "cases": {name: {**summarise(t), "genarena_s": t["genarena"], "official_s": t["official"]}
                  for name, t in times.items()},
        "peak": peak,
        "compile": compiled,
        "profiles": profiles,
        "meta": {"rounds": args.rounds, "threads": args.threads, "batch": args.batch, "params": params,
                 "hardware": hardware(), "cpu": platform.processor() or platform.machine(), "cpu_cores": os.cpu_count(),
                 "torch": torch.__version__, "total_min": (time.perf_counter() - start) / 60,
                 "conditions": args.conditions or "not stated",
                 "var_commit": args.var_commit or commit_of(args.var_repo),
                 "mar_commit": args.mar_commit or commit_of(args.mar_repo),
                 "var_config": {k: list(v) if isinstance(v, tuple) else v for k, v in VAR_CFG.items()},
                 "mar_config": MAR_CFG, "mar_sampling": MAR_SAMPLING, "ddim": DDIM},
    }
    ddim = f"MAR sampling, genarena DDIM-25 (batch {args.sample_batch})"
    if ddim in times:
        pair = {"ddim": times[ddim]["genarena"], "ddpm": times[f"MAR sampling (batch {args.sample_batch})"]["genarena"]}
        results["ddim_vs_ddpm"] = {**summarise(pair, "ddim", "ddpm"), "batch": args.sample_batch, **{
            f"{k}_s": v for k, v in pair.items()}}
    if peak.get("train_gflop_per_step") is None:
        results["meta"]["notes"] = ["(The depth-8 run was skipped: `--peak-rounds 0` or `--only mar`.)"]
    if args.quick:
        results["meta"]["notes"] = [*results["meta"].get("notes", []), "(`--quick`: one round, training at batch "
                                    f"{args.batch}, {args.peak_rounds} depth-8 step(s) per side; a smoke test, not "
                                    "the benchmark.)"]
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.quick or args.out != OUT:
        write_report(args.out, results)
        log(f"wrote {args.out / 'vs_official.md'}")
    else:
        print(json.dumps(results["cases"], indent=1))


if __name__ == "__main__":
    main()

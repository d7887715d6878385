"""The order x head matrix: the continuous multi-scale tokenizer, next-scale x diffusion, heads as a config axis."""

from __future__ import annotations

import pytest
import torch

from genarena.config import validate
from genarena.errors import ConfigError, IncompatibleTokenizerError
from genarena.generators import GENERATORS, build_generator
from genarena.generators.cells import CELLS, cell_of, resolve_head
from genarena.generators.heads import CEHead, DiffusionHead

from .conftest import GENERATOR_CFGS, SAMPLING, TOKENIZER_OF, compose_cfg, tiny_generator, tiny_tokenizer, token_batch


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
    from genarena.tokenizers import build_tokenizer

    from .conftest import TOKENIZER_CFGS

    tok = build_tokenizer({**TOKENIZER_CFGS["mskl"], "kl_weight": 0.0}, image_channels=1, resolution=32).train()
    x = images()
    progression = tok.decode_progression(tok.encode(x))
    assert len(progression) == len(tok.scales)
    torch.testing.assert_close(progression[-1], tok.decode(tok.encode(x)))
    recon, aux = tok(x)
    assert recon.shape == x.shape and set(aux) == {"loss", "kl", "pyramid_loss"} and aux["pyramid_loss"] > 0
    torch.testing.assert_close(aux["loss"].detach(), tok.pyramid_weight * aux["pyramid_loss"])
    aux["loss"].backward()  # without the KL term: the prefix loss reaches phi, never the encoder (a detached latent)
    assert all(p.grad is None or not p.grad.any() for p in tok.encoder.parameters())
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
    from genarena.generators.var import scale_known

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
    with pytest.raises(ConfigError, match="generator=mar generator.order=random, which has no generator.label_smoo"):
        resolve_head(cfg)
    with pytest.raises(ConfigError, match="generator.head='mlp' is not accepted; choose one of ce, diffusion"):
        resolve_head(compose_cfg(["generator=ar", "generator.head=mlp"]))


# ------------------------------------------------------------------------------ the study: sweep, sizes, report
def sweep_jobs() -> list[list[str]]:
    """The jobs of ``+sweep=matrix``: the product of its sweeper params, as Hydra's basic sweeper makes it."""
    import itertools

    from genarena.config import compose

    params = compose("config", ["+sweep=matrix"], return_hydra_config=True).hydra.sweeper.params
    axes = [[f"{key}={v}" for v in str(values).split(",")] for key, values in params.items()]
    return [list(job) for job in itertools.product(*axes)]


def test_the_matrix_sweep_composes_to_the_six_cells():
    from genarena.generators import tokenizer_for

    jobs = sweep_jobs()
    assert len(jobs) == 6
    cells, names, tokenizers = set(), set(), {}
    for job in jobs:
        cfg = compose_cfg(["+sweep=matrix", *job])
        assert cfg.task == "generator" and cfg.tokenizer.ckpt == "auto" and cfg.match_params > 0
        assert cfg.trainer.max_steps == 1200 and cfg.trainer.max_time is None  # one budget, no wall-clock cap
        name = cfg.logger.run_name
        resolve_head(cfg)
        cfg.tokenizer.ckpt = "x.ckpt"
        validate(cfg)
        cell = cell_of(cfg.generator)
        cells.add(cell)
        names.add(cfg.logger.run_name)
        assert cfg.logger.run_name == name and cfg.experiment_name == "matrix_mnist5k"
        tokenizers[cell] = tokenizer_for(cfg.generator.name)
    assert cells == set(CELLS) and len(names) == 6
    assert tokenizers == {("raster", "ce"): "vq", ("masked", "ce"): "vq", ("next-scale", "ce"): "msvq",
                          ("raster", "diffusion"): "kl", ("masked", "diffusion"): "kl",
                          ("next-scale", "diffusion"): "mskl"}


def test_match_params_gives_every_cell_about_the_same_non_embedding_parameters():
    from genarena.generators.cells import match_width, non_embedding_params

    counts = {}
    for (order, head), (paradigm, selectors) in CELLS.items():
        cfg = {**GENERATOR_CFGS[paradigm], **selectors, "depth": 2, "width": None, "heads": None}
        tok = tiny_tokenizer(TOKENIZER_OF[paradigm])
        width, count = match_width(cfg, tok, 300_000)
        assert count == non_embedding_params(cfg, tok, width, 2)
        counts[order, head] = count
    assert all(abs(c - 300_000) / 300_000 < 0.05 for c in counts.values()), counts
    cfg = compose_cfg(["task=generator", "match_params=1000", "generator.width=64", "tokenizer.ckpt=x"])
    from genarena.generators.cells import apply_match_params

    with pytest.raises(ConfigError, match="match_params=1000 chooses generator.width"):
        apply_match_params(cfg)
    with pytest.raises(ConfigError, match="match_params=0"):
        validate(compose_cfg(["match_params=0"]))


def fake_row(order: str, head: str, fid: float, seeds: int = 1, fid_std: float = 0.0) -> dict:
    paradigm = CELLS[order, head][0]
    return {"cell": f"{order} x {head}", "order": order, "head": head, "paradigm": paradigm, "seed": 0,
            "seeds": seeds, "tokenizer": "vq", "width": 128, "params_non_embedding": 640_000, "match_params": 640_000,
            "train_gflops": 1e3, "train_min": 2.0, "steps": 3000, "images_seen": 96_000, "fid": fid, "fid_std": fid_std,
            "class_acc": 0.9, "sample_s_per_image": 0.01, "sampling_steps": 6, "run_dir": f"runs/{order}-{head}"}


def test_the_matrix_report_lays_out_orders_by_heads(tmp_path):
    from genarena.comparison.matrix import READING, write_matrix_report

    rows = [fake_row("raster", "ce", 20.0), fake_row("raster", "diffusion", 15.0),
            fake_row("masked", "ce", 10.0, seeds=3, fid_std=1.0), fake_row("masked", "diffusion", 10.5, 3, 1.0),
            fake_row("next-scale", "ce", 12.0)]
    meta = {"name": "tiny", "data": "synthetic", "runs": "runs/matrix_synthetic", "split": "val", "n_real": 100,
            "num_samples": 20, "extractor": "domain", "extractor_note": "", "classifier_val_acc": 0.95, "seed": 0,
            "batch_size": 20, "checkpoint": "best", "device": "cpu", "command": "genarena-matrix",
            "hardware": "cpu", "seeds": [0], "per_seed": rows, "missing": ["next-scale x diffusion"],
            "tokenizers": {"vq": "t.ckpt"}, "reading": None, "total_min": 0.1}
    report = write_matrix_report(tmp_path, rows, [{"paradigm": "real train split", "fid": 1.0}], meta).read_text()
    assert "| order | ce head | diffusion head |" in report
    assert "| raster (`ar`) | 20.00 `ar` | 15.00 `mar` |" in report
    assert "| masked (`maskgit`) | 10.00 ± 1.00 `maskgit` | 10.50 ± 1.00 `mar` |" in report
    assert "| next-scale (`var`) | 12.00 `var` | missing |" in report
    assert "640,000 (128) `var`" in report and "0.0100 (6 steps) `ar`" in report and "closest to 640,000 " in report
    assert "Equal training budget: 3,000 steps, 96,000 images for every cell" in report
    assert "the CE head | raster x diffusion vs raster x ce | holds (15.00 vs 20.00) |" \
        in report
    assert "masked x diffusion vs masked x ce | within seed noise (10.50 vs 10.00)" in report
    assert "next-scale x ce vs raster x ce | holds (12.00 vs 20.00)" in report
    assert "next-scale x diffusion vs raster x diffusion | not measured" in report
    assert "N = 20" in report and "domain" in report and "To be written after the real run" in report
    assert "Missing cells" in report and (tmp_path / "results.json").is_file() and (tmp_path / "results.csv").is_file()
    (tmp_path / READING).write_text("Diffusion helps the raster order; next-scale beats raster.")
    meta["reading"] = (tmp_path / READING).read_text()
    report = write_matrix_report(tmp_path, rows, [], meta).read_text()
    assert "Diffusion helps the raster order" in report and "To be written" not in report


@pytest.mark.slow
def test_the_matrix_study_runs_end_to_end_on_a_tiny_config(workdir):
    """The four tokenizers, ``+sweep=matrix`` (six cells, two steps each) and ``genarena-matrix``: the report's
    3 x 2 tables hold every cell."""
    import json
    import subprocess
    import sys

    def run(module: str, *args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=workdir, capture_output=True, text=True,
                              timeout=3600)
        assert proc.returncode == 0, proc.stderr[-4000:]

    tiny = ["data=synthetic", "data.num_images=200", "trainer.enable_progress_bar=false", "log.sample_every_n_steps=0",
            "trainer.limit_val_batches=1", "trainer.val_check_interval=2", "trainer.max_steps=2"]
    run("genarena.cli.train", "-m", "task=tokenizer", "tokenizer=vq,msvq,kl,mskl", *tiny)
    run("genarena.cli.train", "-m", "+sweep=matrix", "match_params=300000", *tiny)
    run("genarena.cli.matrix", "data=synthetic", "data.num_images=200", "classifier.max_steps=20",
        "classifier.min_val_acc=0", "eval.extractor=domain", "matrix.num_samples=20", "matrix.batch_size=20")
    out = workdir / "outputs" / "matrix" / "synthetic"
    report = (out / "report.md").read_text()
    for order, option in (("raster", "ar"), ("masked", "maskgit"), ("next-scale", "var")):
        assert f"| {order} (`{option}`) |" in report
    assert "missing" not in report and "Missing cells" not in report and "N = 20" in report
    results = json.loads((out / "results.json").read_text())
    cells = {(r["order"], r["head"]): r for r in results["paradigms"]}
    assert set(cells) == set(CELLS)
    for (order, head), r in cells.items():
        assert r["paradigm"] == CELLS[order, head][0] and r["fid"] >= 0 and 0 <= r["class_acc"] <= 1
        assert abs(r["params_non_embedding"] - 300_000) / 300_000 < 0.1 and r["steps"] == 2
    assert (out / "samples.png").is_file() and (out / "frontier.png").is_file()


def test_an_existing_run_of_an_alias_cell_is_recognised_before_hydra_writes_into_it(tmp_path):
    """``hydra.run.dir=<run>`` of a run started as ``generator=ar generator.head=diffusion``: the start-up check
    compares the config the job will run (the cell's paradigm), so the same command is not refused."""
    from omegaconf import OmegaConf

    from genarena.cli.app import StartupChecks
    from genarena.config import compose
    from genarena.runs import config_fingerprint, write_metrics

    overrides = ["task=generator", "generator=ar", "generator.head=diffusion", "tokenizer.ckpt=x.ckpt",
                 f"hydra.run.dir={tmp_path / 'run'}"]
    config = compose("config", overrides, return_hydra_config=True)
    job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    resolve_head(job)
    write_metrics(tmp_path / "run", {"config_fingerprint": config_fingerprint(job), "status": "finished"})
    StartupChecks._check(config, "hydra.run.dir")  # the same config: no error
    other = compose("config", [*overrides, "generator.depth=3"], return_hydra_config=True)
    with pytest.raises(SystemExit):
        StartupChecks._check(other, "hydra.run.dir")

"""``genarena-import`` end to end: tiny "released" checkpoints built from the golden fixtures of the official code
(``tests/fixtures/official/``) become run directories that ``genarena-sample``, ``genarena-eval`` and
:func:`genarena.load` take, whose generators reproduce the official outputs.

The released files are the fixtures' official state dicts in the layout of the released files (VAR's plain state
dicts, MAR's and LlamaGen's ``{"model": ...}`` / ``{"model", "model_ema", "args"}``). A generator fixture and its
tokenizer fixture were made independently, so the tokenizer file is made to fit the generator: VAR's VQVAE takes
the quantizer the VAR fixture was made with, LlamaGen's VQ keeps the first 16 codes, MAR's KL-16 gets 16-dim
quant convs. The tokenizers' GroupNorm has 4 groups, as the fixtures were made (``norm_groups=4``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import genarena
from genarena.cli import evaluate, import_official, sample
from genarena.official.importer import OFFICIAL_MODELS

FIXTURES = Path(__file__).parent / "fixtures" / "official"
TOL = {"atol": 1e-5, "rtol": 1e-5}
TINY = {  # per model: what the tiny files need (the released sizes need none of it)
    "var": ["norm_groups=4", "data.resolution=8"],
    "mar": ["norm_groups=4", "data.resolution=8", "heads=2"],
    "llamagen": ["norm_groups=4", "data.resolution=8", "heads=2", "ffn_multiple_of=32"],
}
FAST_SAMPLING = {"mar": ["sampling.steps=4", "sampling.diffusion_steps=10"]}


def fixture(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def floats(sd: dict) -> dict:
    """The tokenizer fixtures store float16-exact weights as float16; released files hold float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def released_var(folder: Path) -> tuple[Path, Path]:
    """``vae_*.pth`` (plain state dict: the VQVAE fixture's networks with the VAR fixture's quantizer) and
    ``var_d2.pth`` (plain state dict)."""
    vae = {k: v for k, v in floats(fixture("var_vqvae")["state_dict"]).items() if not k.startswith("quantize.")}
    var = fixture("var")
    vae.update({f"quantize.{k}": v for k, v in var["quantizer_state_dict"].items()})
    torch.save(vae, folder / "vae_tiny.pth")
    torch.save(var["state_dict"], folder / "var_d2.pth")
    return folder / "vae_tiny.pth", folder / "var_d2.pth"


def released_mar(folder: Path) -> tuple[Path, Path]:
    """``kl16.ckpt`` (``{"model": ...}``; quant convs redrawn for MAR's 16-dim tokens) and ``checkpoint-last.pth``
    as main_mar.py saves it: the fixture's weights as ``model_ema``, other weights as ``model``, the arguments."""
    kl = floats(fixture("mar_kl")["state_dict"])
    z, dim = kl["post_quant_conv.weight"].shape[0], 16
    g = torch.Generator().manual_seed(0)
    kl.update({"quant_conv.weight": torch.randn(2 * dim, 2 * z, 1, 1, generator=g) * 0.1,
               "quant_conv.bias": torch.zeros(2 * dim),
               "post_quant_conv.weight": torch.randn(z, dim, 1, 1, generator=g) * 0.1,
               "post_quant_conv.bias": torch.zeros(z)})
    torch.save({"model": kl}, folder / "kl16.ckpt")
    ema = fixture("mar")["state_dict"]
    trained = {k: v + 1 if v.is_floating_point() else v for k, v in ema.items()}
    torch.save({"model": trained, "model_ema": ema, "epoch": 399, "args": argparse.Namespace(model="mar_tiny")},
               folder / "checkpoint-last.pth")
    return folder / "kl16.ckpt", folder / "checkpoint-last.pth"


def released_llamagen(folder: Path) -> tuple[Path, Path]:
    """``vq_*.pt`` (``{"model": ...}``, the VQ fixture with its first 16 codes) and ``c2i_*.pt``
    (``{"model": ...}``)."""
    vq = floats(fixture("llamagen_vq")["state_dict"])
    vq["quantize.embedding.weight"] = vq["quantize.embedding.weight"][:16]
    torch.save({"model": vq}, folder / "vq_tiny.pt")
    torch.save({"model": fixture("llamagen_gpt")["state_dict"], "steps": 100}, folder / "c2i_tiny.pt")
    return folder / "vq_tiny.pt", folder / "c2i_tiny.pt"


RELEASED = {"var": released_var, "mar": released_mar, "llamagen": released_llamagen}


def run_command(monkeypatch, module, prog: str, *argv: str) -> None:
    """A genarena Hydra app in this process (overrides as on the command line)."""
    monkeypatch.setattr(sys, "argv", [prog, *argv])
    module.main()


def genarena_import(monkeypatch, model: str, files: tuple[Path, Path], out: Path, *extra: str) -> None:
    run_command(monkeypatch, import_official, "genarena-import", f"model={model}", f"tokenizer_file={files[0]}",
                f"generator_file={files[1]}", f"out={out}", *TINY[model], *extra)


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, Path]:
    """Each model imported once through the command: model -> run directory."""
    root = tmp_path_factory.mktemp("imported")
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        for model, make in RELEASED.items():
            folder = root / f"{model}_files"
            folder.mkdir()
            runs[model] = root / "runs" / model
            genarena_import(mp, model, make(folder), runs[model])
    return runs


# ------------------------------------------------------------------------------ the run directory
@pytest.mark.parametrize("model", list(OFFICIAL_MODELS))
def test_imported_run_is_laid_out_like_a_trained_generator_run(imported, model):
    run = imported[model]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "metrics.json"]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain containers only
    hp = ckpt["hyper_parameters"]
    paradigm = OFFICIAL_MODELS[model].paradigm
    assert hp["role"] == "generator" and hp["generator"]["name"] == paradigm
    assert hp["data"]["name"] == "imagefolder" and hp["data"]["root"] is None and hp["data"]["resolution"] == 8
    assert {k.split(".", 1)[0] for k in ckpt["state_dict"]} == {"tokenizer", "generator"}
    assert all(v.dtype != torch.float16 for v in ckpt["state_dict"].values())
    m = json.loads((run / "metrics.json").read_text())
    assert (m["status"], m["task"], m["paradigm"], m["source"]) == ("finished", "generator", paradigm, "official")
    assert m["official_repo"] == OFFICIAL_MODELS[model].repo and m["params"] > 0 and m["sampling_steps"] > 0
    for key in ("tokenizer", "generator"):
        source = Path(m[f"{key}_file"])
        assert m[f"{key}_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    cfg = genarena.compose("config", [])  # the resolved config.yaml is a root config of this genarena
    written = OmegaConf.load(run / "config.yaml")
    assert set(written) == set(cfg) and written.task == "generator" and written.generator.name == paradigm
    assert written.generator == OmegaConf.create(hp["generator"])


def test_imported_mar_holds_the_ema_weights_by_default(imported, tmp_path, monkeypatch):
    run = genarena.load(imported["mar"], device="cpu")
    ema = fixture("mar")["state_dict"]
    torch.testing.assert_close(run.generator.z_proj.weight, ema["z_proj.weight"])
    assert run.config.weights == "ema"
    files = released_mar(tmp_path)
    genarena_import(monkeypatch, "mar", files, tmp_path / "trained", "ema=false")
    trained = genarena.load(tmp_path / "trained", device="cpu")
    torch.testing.assert_close(trained.generator.z_proj.weight, ema["z_proj.weight"] + 1)
    assert trained.config.weights == "trained"


# ------------------------------------------------------------------------------ parity through the import path
@torch.no_grad()
def test_imported_var_gives_the_official_logits_and_tokens(imported):
    fx = fixture("var")
    gen = genarena.load(imported["var"], device="cpu").generator
    torch.testing.assert_close(gen(fx["indices"], fx["labels"]), fx["logits"], **TOL)
    tokens = gen.sample(fx["labels"], cfg=fx["cfg"], cfg_schedule="linear", temperature=1.0, top_k=1, top_p=0.0,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, fx["sample_tokens"])


@torch.no_grad()
def test_imported_llamagen_gives_the_official_logits_and_tokens(imported):
    fx = fixture("llamagen_gpt")
    gen = genarena.load(imported["llamagen"], device="cpu").generator
    torch.testing.assert_close(gen(fx["tokens"], fx["labels"]), fx["logits"], **TOL)
    tokens = gen.sample(fx["labels"], cfg=fx["cfg_scale"] - 1, cfg_schedule="constant", temperature=1.0, top_k=1,
                        top_p=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, fx["generated"])


@torch.no_grad()
def test_imported_mar_gives_the_official_encoder_decoder_outputs(imported):
    m = fixture("mar")["mae"]
    gen = genarena.load(imported["mar"], device="cpu").generator
    cond = gen.class_embed(m["labels"])
    encoded = gen.encode(m["tokens"], m["mask"], cond)
    torch.testing.assert_close(encoded, m["encoded"], **TOL)
    torch.testing.assert_close(gen.decode(encoded, m["mask"], cond), m["z"], **TOL)


# ------------------------------------------------------------------------------ sample, eval
@pytest.mark.parametrize("model", list(OFFICIAL_MODELS))
def test_genarena_sample_takes_the_imported_run_and_is_deterministic(imported, model, tmp_path, monkeypatch):
    outs = []
    for name in ("a", "b"):
        outs.append(tmp_path / name)
        run_command(monkeypatch, sample, "genarena-sample", f"ckpt={imported[model]}", "n=4", "seed=3", "device=cpu",
                    f"out={outs[-1]}", *FAST_SAMPLING.get(model, []))
    a, b = (np.load(o / "samples.npz") for o in outs)
    assert a["images"].shape == (4, 8, 8, 3) and a["images"].dtype == np.uint8
    assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
    meta = json.loads((outs[0] / "meta.json").read_text())
    assert meta["paradigm"] == OFFICIAL_MODELS[model].paradigm


def tiny_imagefolder(root: Path, classes: int, per_class: int = 4) -> Path:
    """``root/{train,val}/<class>/*.png``: 8x8 RGB images, a colour per class."""
    g = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                base = np.full((8, 8, 3), 40 * c, np.uint8)
                Image.fromarray(base + g.integers(0, 30, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_genarena_eval_takes_the_imported_run_with_its_data_root(imported, workdir, monkeypatch):
    data = tiny_imagefolder(workdir / "imagenet", classes=5)  # the fixture VAR has 5 classes
    run_command(monkeypatch, evaluate, "genarena-eval", f"ckpt={imported['var']}", f"data.root={data}",
                "data.num_workers=0", "eval.extractor=domain", "eval.num_samples=10", "eval.batch_size=10",
                "eval.metrics=[fid]", "classifier.max_steps=2", "classifier.min_val_acc=0", "classifier.batch_size=8",
                "device=cpu",
                f"out={workdir / 'eval'}")
    m = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert m["eval_n"] == 10 and m["eval_n_real"] == 20 and m["eval_data"] == "imagefolder"
    assert np.isfinite(m["fid"]) and 0 <= m["class_acc"] <= 1 and m["eval_checkpoint"] == "last"


def test_genarena_eval_without_the_imagenet_root_stops_before_sampling(imported, workdir, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        run_command(monkeypatch, evaluate, "genarena-eval", f"ckpt={imported['var']}", "eval.extractor=domain",
                    "device=cpu")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the log line saying that last.ckpt is used
    assert err == "genarena-eval: error: data.name=imagefolder needs data.root=<directory>; none was given"
    assert not (imported["var"] / "eval").exists()


# ------------------------------------------------------------------------------ errors
def import_error(monkeypatch, capsys, model: str, files, out: Path, *extra: str) -> str:
    with pytest.raises(SystemExit) as e:
        genarena_import(monkeypatch, model, files, out, *extra)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    last = err.splitlines()[-1]  # log lines (building ...) may come before it
    assert last.startswith("genarena-import: error: ") and all(
        line.startswith("[") for line in err.splitlines()[:-1]), err
    return last


def test_a_truncated_file_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    files = released_var(tmp_path)
    files[1].write_bytes(files[1].read_bytes()[:5000])
    err = import_error(monkeypatch, capsys, "var", files, tmp_path / "run")
    assert err.startswith(f"genarena-import: error: generator_file={files[1]}: VAR transformer checkpoint")
    assert "cannot be read with weights_only=True" in err
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.*"))


def test_a_file_with_wrong_keys_names_them_in_one_line(tmp_path, monkeypatch, capsys):
    vae, var = released_var(tmp_path)
    sd = torch.load(vae, weights_only=True)
    del sd["decoder.conv_out.bias"]
    sd["encoder.extra.weight"] = torch.zeros(1)
    sd["quant_conv.bias"] = torch.zeros(5)
    torch.save(sd, vae)
    err = import_error(monkeypatch, capsys, "var", (vae, var), tmp_path / "run")
    assert f"tokenizer_file={vae}: not a VAR VQVAE state dict" in err
    for part in ("missing keys (1): decoder.conv_out.bias", "unexpected keys (1): encoder.extra.weight",
                 "mis-shaped keys (1): quant_conv.bias (5,) != (8,)"):
        assert part in err, err


def test_files_of_two_models_are_refused(tmp_path, monkeypatch, capsys):
    vq, gpt = released_llamagen(tmp_path)
    sd = torch.load(vq, weights_only=True)
    sd["model"]["quantize.embedding.weight"] = torch.zeros(32, 4)  # a codebook of another size
    torch.save(sd, vq)
    err = import_error(monkeypatch, capsys, "llamagen", (vq, gpt), tmp_path / "run")
    assert "do not belong together: the GPT predicts 16 codes, the VQ tokenizer has 32" in err
    vae, _ = released_var(tmp_path)  # a VQVAE where LlamaGen's VQ belongs
    err = import_error(monkeypatch, capsys, "llamagen", (vae, gpt), tmp_path / "run")
    assert f"tokenizer_file={vae}: LlamaGen VQ checkpoint" in err and "has no 'model' entry" in err


def test_a_head_count_that_does_not_fit_is_one_line(tmp_path, monkeypatch, capsys):
    err = import_error(monkeypatch, capsys, "mar", released_mar(tmp_path), tmp_path / "run", "heads=3")
    assert err.endswith("cannot build MAR (width 32) as genarena's mar: width 32 is not divisible by heads 3"), err


def test_an_existing_output_directory_is_refused(tmp_path, monkeypatch, capsys):
    files = released_var(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    err = import_error(monkeypatch, capsys, "var", files, tmp_path / "run")
    assert err == f"genarena-import: error: out={tmp_path / 'run'} already exists; genarena-import never overwrites: " \
                  "give a new directory"
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("extra, message", [
    (["model=dall-e"], "model='dall-e' is not accepted; choose one of var, mar, llamagen"),
    (["data.resolution=256"], "the checkpoints hold 8 px images (the transformer's last scale 4 x the tokenizer's "
                              "downsampling 2), but data.resolution=256; set data.resolution=8"),
    (["heads=4"], "heads=4 does not apply to model=var"),
    (["norm_groups=3"], "tokenizer.ldm.norm_groups=3 is not accepted"),
])
def test_import_options_are_checked(tmp_path, monkeypatch, capsys, extra, message):
    err = import_error(monkeypatch, capsys, "var", released_var(tmp_path), tmp_path / "run", *extra)
    assert message in err, err

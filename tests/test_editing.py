"""Zero-shot editing: ``Generator.complete`` keeps the known tokens of every paradigm exactly, mask specs and their
errors, ``genarena-edit`` end to end on tiny runs (relabelling included), and the editing scores."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from genarena.cli import edit as edit_cli
from genarena.editing import (
    changed_labels,
    check_mask_spec,
    complete_images,
    interior,
    mask_tag,
    pixel_mask,
    token_mask,
)
from genarena.errors import ConfigError
from genarena.generators import build_generator
from genarena.generators.var import scale_known
from genarena.tokenizers import build_tokenizer

from .conftest import GENERATOR_CFGS, SAMPLING, TOKENIZER_CFGS, TOKENIZER_OF, compose_cfg, tiny_generator, token_batch

PARADIGMS = [("var", {}), ("ar", {}), ("maskgit", {}), ("mar", {}), ("mar", {"order": "raster"}),
             ("var_diffusion", {})]
IDS = ["var", "ar", "maskgit", "mar", "mar-raster", "var_diffusion"]
DATA = ["data=mnist5k", "data.resolution=16"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def last_grid(gen, tokens: torch.Tensor) -> torch.Tensor:
    """The last-scale token map ``(B, h, w[, D])`` of any paradigm's tokens."""
    h, w = gen.tokenizer.grid
    if gen.order == "next-scale":
        tokens = tokens[:, -h * w:]
    return tokens.reshape(len(tokens), h, w, *tokens.shape[2:])


def hole_masks(b: int, h: int, w: int) -> torch.Tensor:
    """A centre hole in every row, and a right half missing too in the last row (a different count)."""
    known = torch.ones(b, h, w, dtype=torch.bool)
    known[:, h // 4: h - h // 4, w // 4: w - w // 4] = False
    known[-1, :, w // 2:] = False
    return known


# ------------------------------------------------------------------------------------ Generator.complete
@pytest.mark.parametrize("paradigm, over", PARADIGMS, ids=IDS)
def test_complete_keeps_known_tokens_exactly(paradigm, over):
    gen, tok = tiny_generator(paradigm, **over)
    tokens, labels = token_batch(tok, 4)
    known = hole_masks(4, *tok.grid)
    sampling = {**SAMPLING[paradigm], "cfg": 1.5}
    out = gen.complete(tokens, known, labels, generator=torch.Generator().manual_seed(0), **sampling)
    assert out.shape == tokens.shape and out.dtype == tokens.dtype
    got, given = last_grid(gen, out), last_grid(gen, tokens)
    assert torch.equal(got[known], given[known])  # exactly, continuous tokens included
    assert (got[~known] != given[~known]).any()  # the hole is generated, not copied
    if gen.order == "next-scale":  # every scale's kept part is the input's
        for k, (o, t) in enumerate(zip(tok.split_scales(out), tok.split_scales(tokens))):
            pn = tok.scales[k]
            keep = scale_known(known, pn)
            o, t = o.reshape(len(o), pn, pn, -1), t.reshape(len(t), pn, pn, -1)  # ids (B, pn, pn), vectors (B, pn^2, D)
            assert torch.equal(o[keep], t[keep])


@pytest.mark.parametrize("paradigm, over", PARADIGMS, ids=IDS)
def test_complete_with_nothing_known_is_sampling(paradigm, over):
    """The same random draws as ``sample``: editing changes only what is kept, not the sampler."""
    gen, tok = tiny_generator(paradigm, **over)
    tokens, labels = token_batch(tok, 2)
    nothing = torch.zeros(2, *tok.grid, dtype=torch.bool)
    sampling = {**SAMPLING[paradigm], "cfg": 1.5}
    done = gen.complete(tokens, nothing, labels, generator=torch.Generator().manual_seed(3), **sampling)
    drawn = gen.sample(labels, generator=torch.Generator().manual_seed(3), **sampling)
    assert torch.equal(done, drawn)


def test_complete_rejects_a_mask_off_the_grid():
    gen, tok = tiny_generator("ar")
    tokens, labels = token_batch(tok, 2)
    with pytest.raises(ValueError, match=r"bool \(B, 8, 8\) mask"):
        gen.complete(tokens, torch.ones(2, 4, 4, dtype=torch.bool), labels, **SAMPLING["ar"])


def test_var_scale_masks_follow_the_known_area():
    known = torch.ones(1, 8, 8, dtype=torch.bool)
    known[:, :, 4:] = False  # right half unknown
    assert scale_known(known, 8) is known
    assert scale_known(known, 2)[0].tolist() == [[True, False], [True, False]]
    assert scale_known(known, 1).all()  # a 1x1 scale is the image mean: taken whole when anything is known
    assert not scale_known(torch.zeros(1, 8, 8, dtype=torch.bool), 1).any()


# ------------------------------------------------------------------------------------ mask specs
def test_mask_specs_and_token_masks(tmp_path):
    center = pixel_mask("center", (16, 16))
    assert (~center).sum() == 64 and not center[4:12, 4:12].any() and center[:4].all()
    assert token_mask(center, (4, 4)).tolist() == [[True] * 4, [True, False, False, True],
                                                   [True, False, False, True], [True] * 4]
    right = pixel_mask("right", (16, 16))
    assert right[:, :8].all() and not right[:, 8:].any()
    for spec, region in (("left", (slice(None), slice(0, 8))), ("top", (slice(0, 8), slice(None))),
                         ("bottom", (slice(8, 16), slice(None)))):
        m = pixel_mask(spec, (16, 16))
        assert not m[region].any() and m.sum() == 128
    box = pixel_mask("box:1,2,6,5", (16, 16))  # x in [1, 6), y in [2, 5)
    assert (~box).sum() == 15 and not box[2, 1] and box[2, 6] and box[5, 1]
    # a token is known only when all its pixels are: the 1-pixel-deep box edges cost whole tokens
    assert token_mask(box, (4, 4)).sum() == 16 - 4
    png = tmp_path / "hole.png"
    hole = np.zeros((16, 16), np.uint8)
    hole[12:, 12:] = 255
    Image.fromarray(hole).save(png)
    assert token_mask(pixel_mask(str(png), (16, 16)), (4, 4)).sum() == 15
    inner = interior(right, 4)  # more than one 4-pixel token from the generated right half
    assert inner[:, :4].all() and not inner[:, 4:].any()
    assert mask_tag("box:1,2,6,5") == "box1-2-6-5" and mask_tag(str(png)) == "hole" and mask_tag("center") == "center"


@pytest.mark.parametrize("spec, size, message", [
    ("middle", (16, 16), "not accepted .* center, left, right, top, bottom, 'box:x0,y0,x1,y1'"),
    ("box:1,2,3", (16, 16), "four integer pixel coordinates"),
    ("box:a,b,c,d", (16, 16), "four integer pixel coordinates"),
    ("box:4,4,20,12", (16, 16), "does not fit the 16x16 images; a box needs 0 <= x0 < x1 <= 16"),
    ("box:5,5,5,9", (16, 16), "does not fit"),
    ("missing.png", (16, 16), "not accepted .*PNG file"),
])
def test_bad_mask_specs_are_clear_errors(spec, size, message):
    with pytest.raises(ConfigError, match=message):
        pixel_mask(spec, size)


def test_masks_that_do_not_fit_the_grid_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="leaves no token of the 4x4 grid known"):
        token_mask(pixel_mask("box:0,0,16,16", (16, 16)), (4, 4))
    with pytest.raises(ConfigError, match="do not divide into the 3x3 token grid"):
        token_mask(pixel_mask("center", (16, 16)), (3, 3))
    png = tmp_path / "small.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(png)
    with pytest.raises(ConfigError, match="is 8x8 pixels but the images are 16x16"):
        pixel_mask(str(png), (16, 16))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(png)
    with pytest.raises(ConfigError, match="marks no pixel to generate"):
        pixel_mask(str(png), (16, 16))
    check_mask_spec("box:0,0,4,4")  # the form alone is fine before the image size is known


# ------------------------------------------------------------------------------------ the library and the CLI
def fake_run(root: Path, paradigm: str, **over) -> Path:
    """A finished generator run directory with a tiny untrained checkpoint on mnist5k at 16 px (4x4 tokens)."""
    tok_cfg = dict(TOKENIZER_CFGS[TOKENIZER_OF[paradigm]])
    if "patch_nums" in tok_cfg:
        tok_cfg["patch_nums"] = [1, 2, 4]  # scales ending at the 4x4 grid of 16 px images
    gen_cfg = {**GENERATOR_CFGS[paradigm], **over}
    torch.manual_seed(0)
    tok = build_tokenizer(tok_cfg, image_channels=1, resolution=16).eval()
    gen = build_generator(gen_cfg, tok, 10).eval()
    name = paradigm + "".join(f"_{v}" for v in over.values())
    run = root / "runs" / f"generator_{name}_mnist5k" / "2024-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    sd = {**{f"tokenizer.{k}": v for k, v in tok.state_dict().items()},
          **{f"generator.{k}": v for k, v in gen.state_dict().items()}}
    hp = {"role": "generator", "generator": gen_cfg, "tokenizer": tok_cfg, "num_classes": 10,
          "data": OmegaConf.to_container(compose_cfg(DATA).data, resolve=True)}
    torch.save({"state_dict": sd, "hyper_parameters": hp}, run / "checkpoints" / "last.ckpt")
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "task": "generator", "paradigm": paradigm}))
    return run


def genarena_edit(monkeypatch, *argv: str) -> None:
    """Run the genarena-edit command in this process (a Hydra app: overrides as on the command line)."""
    monkeypatch.setattr(sys, "argv", ["genarena-edit", *argv])
    edit_cli.main()


def test_edit_cli_end_to_end(workdir, monkeypatch):
    run = fake_run(workdir, "maskgit")
    genarena_edit(monkeypatch, f"ckpt={run}", "n=12", "mask=right", "checkpoint=last", "sampling.steps=2")
    out = run / "edits" / "right_seed0"
    with np.load(out / "edits.npz") as f:
        images, labels, originals, known = f["images"], f["labels"], f["originals"], f["known"]
        assert images.shape == originals.shape == (12, 16, 16, 1) and images.dtype == np.uint8
        assert known.shape == (16, 16) and known[:, :8].all() and not known[:, 8:].any()
        assert f["known_tokens"].sum() == 8 and np.array_equal(f["source_labels"], labels)
    assert sorted(set(labels.tolist())) == list(range(10))  # class-balanced validation digits
    meta = json.loads((out / "meta.json").read_text())
    assert meta["paradigm"] == "maskgit" and meta["mask"] == "right" and meta["sampling"]["steps"] == 2
    grid = Image.open(out / "grid.png")
    assert grid.size[1] > 3 * 16  # original / masked / completion rows


def val_digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` class-balanced mnist5k validation digits at 16 px (the split loaded once per session)."""
    from genarena.data.sources import balanced_subset

    from .test_metrics import real_splits

    images, labels = real_splits()["val"]
    keep = balanced_subset(labels, n)
    return images[keep], labels[keep]


def test_edit_cli_relabel_box_and_paste(workdir, monkeypatch):
    run = fake_run(workdir, "var")
    images, labels = val_digits(4)
    np.savez(workdir / "four.npz", images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
    genarena_edit(monkeypatch, f"ckpt={run}", f"images={workdir / 'four.npz'}", "n=4", "mask='box:0,0,8,16'",
                  "relabel=7", "paste=true", "checkpoint=last", f"out={workdir / 'e'}")
    with np.load(workdir / "e" / "edits.npz") as f:
        assert (f["labels"] == 7).all() and np.array_equal(f["source_labels"], labels.numpy())
        assert np.array_equal(f["originals"], images.permute(0, 2, 3, 1).numpy())
        assert np.array_equal(f["images"][:, :, 8:], f["originals"][:, :, 8:])  # pasted: the kept half is exact
    meta = json.loads((workdir / "e" / "meta.json").read_text())
    assert meta["relabel"] == 7 and meta["mask"] == "box:0,0,8,16" and meta["known_tokens"] == 8


def test_edit_cli_needs_labels_of_the_run(workdir, monkeypatch, capsys):
    run = fake_run(workdir, "ar")
    (workdir / "pngs").mkdir()
    for i, img in enumerate(val_digits(2)[0]):
        Image.fromarray(img[0].numpy()).save(workdir / "pngs" / f"{i}.png")
    with pytest.raises(SystemExit):
        genarena_edit(monkeypatch, f"ckpt={run}", f"images={workdir / 'pngs'}", "n=2", "checkpoint=last")
    assert "carry no labels; give relabel=<class id>" in capsys.readouterr().err
    images, _ = val_digits(2)
    np.savez(workdir / "bad.npz", images=images.permute(0, 2, 3, 1).numpy(), labels=np.array([3, 12]))
    with pytest.raises(SystemExit):
        genarena_edit(monkeypatch, f"ckpt={run}", f"images={workdir / 'bad.npz'}", "n=2", "checkpoint=last")
    assert "have labels in [3, 12] but the run models classes 0..9" in capsys.readouterr().err
    genarena_edit(monkeypatch, f"ckpt={run}", f"images={workdir / 'pngs'}", "n=2", "checkpoint=last", "relabel=1",
                  f"out={workdir / 'p'}")
    with np.load(workdir / "p" / "edits.npz") as f:
        assert f["images"].shape == (2, 16, 16, 1) and "source_labels" not in f.files


@pytest.mark.parametrize("argv, message", [
    (["mask=middle"], "mask='middle' is not accepted"),
    (["relabel=10"], r"relabel=10 is not accepted; a class id in \[0, 9\]"),
    (["n=0"], "n=0 is not accepted"),
    (["images=nowhere"], "neither an .npz file nor a folder"),
    (["sampling.top_p=2"], "sampling.top_p=2.0 is not accepted"),
    (["sampling.choice_temperature=1"], "does not apply to this paradigm"),
    (["+foo=1"], "foo is not a config key"),
])
def test_edit_cli_errors_are_one_line(workdir, monkeypatch, capsys, argv, message):
    run = fake_run(workdir, "ar")
    with pytest.raises(SystemExit) as e:
        genarena_edit(monkeypatch, f"ckpt={run}", "checkpoint=last", *argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genarena-edit: error:")
    assert re.search(message, err[0]), err[0]


@pytest.mark.parametrize("paradigm, over", PARADIGMS, ids=IDS)
def test_complete_images_of_every_paradigm(paradigm, over, workdir):
    """Images in, images out for every paradigm: the shapes, the masks, relabelling, and seeded repeats."""
    from genarena.api import load

    run = load(fake_run(workdir, paradigm, **over), checkpoint="last", device="cpu")
    images, labels = val_digits(4)
    known = pixel_mask("center", (16, 16))
    other = changed_labels(labels, 10)
    edit = lambda: complete_images(run.generator, run.tokenizer, images, other, known, run.sampling,  # noqa: E731
                                   seed=0, batch_size=4, device="cpu")
    edited = edit()
    assert edited.completions.shape == images.shape and edited.completions.dtype == torch.uint8
    assert torch.equal(edited.labels, (labels + 1) % 10) and edited.known_tokens.sum() == 12
    assert edited.masked()[:, :, 4:12, 4:12].eq(128).all() and torch.equal(edited.masked()[:, :, :4], images[:, :, :4])
    assert torch.equal(edit().completions, edited.completions)  # seeded
    assert len(edited.grid_rows()) == 3


@pytest.mark.slow  # about 10 s: a tiny classifier, the real split's features and five FIDs (make test-all runs it)
def test_editing_benchmark_runs_on_tiny_runs(workdir):
    """benchmarks/editing.py over a folder of (tiny, untrained) runs: one row per paradigm and task, with the
    scores the compare report's editing table shows (genarena.editing.score_edit_tasks)."""
    import importlib.util

    from .test_metrics import TINY_CLASSIFIER_FLOOR, eval_config

    eval_config()  # the tiny classifier in the cache the benchmark's config points at
    for paradigm, over in (("var", {}), ("mar", {"order": "raster"})):
        fake_run(workdir, paradigm, **over)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "editing.py"
    spec = importlib.util.spec_from_file_location("editing_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--runs", str(workdir / "runs"), "--n", "4", "--checkpoint", "last", "--out",
                         str(workdir / "bench"), "--set", "eval.extractor=domain", TINY_CLASSIFIER_FLOOR])
    assert [(r["paradigm"], r["task"]) for r in result["rows"]] == [
        ("mar-raster", "inpaint"), ("mar-raster", "outpaint"), ("var", "inpaint"), ("var", "outpaint")]
    for r in result["rows"]:
        assert r["n"] == 4 and r["fid"] >= 0 and 0 <= r["class_acc"] <= 1 and 0 <= r["relabel_class_acc"] <= 1
        assert r["known_mse"] >= 0 and r["recon_known_mse"] > 0 and r["s_per_image"] > 0
        assert r["known_tokens"] == {"inpaint": 12, "outpaint": 8}[r["task"]]  # of the 4x4 grid
    md = (workdir / "bench" / "editing.md").read_text()
    assert "| var | out-painting (right half) |" in md
    assert json.loads((workdir / "bench" / "editing.json").read_text())["meta"]["n"] == 4

"""`genarena-eval` end to end: saved images (.npz, PNG folder) and a generator run, metrics.json files,
one-line errors, and the W&B hook."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from genarena.checkpoints import resolve_checkpoint
from genarena.cli import evaluate
from genarena.errors import ConfigError
from genarena.lit.loggers import find_wandb_run_id
from genarena.lit.wandb_results import log_evaluation

from .conftest import compose_cfg
from .test_metrics import (  # noqa: F401
    DATA,
    TINY_CLASSIFIER_FLOOR,
    eval_config,
    one_thread,
    real_splits,
    tiny_generator_16px,
)

DOMAIN = ["data=mnist5k", "data.resolution=16", "eval.extractor=domain", TINY_CLASSIFIER_FLOOR]


def genarena_eval(monkeypatch, *argv: str) -> None:
    """Run the genarena-eval command in this process (a Hydra app: overrides as on the command line)."""
    monkeypatch.setattr(sys, "argv", ["genarena-eval", *argv])
    evaluate.main()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_npz(path: Path, images: torch.Tensor, labels: torch.Tensor | None = None) -> Path:
    """uint8 ``(N, C, H, W)`` -> ``images`` (N, H, W, C) [+ ``labels``] in an .npz."""
    arrays = {"images": images.permute(0, 2, 3, 1).numpy()}
    if labels is not None:
        arrays["labels"] = labels.numpy()
    np.savez(path, **arrays)
    return path


def fake_run(root: Path) -> Path:
    """A finished generator run directory with a tiny untrained raster AR checkpoint on mnist5k at 16 px."""
    gen, tok, gen_cfg, tok_cfg = tiny_generator_16px()
    run = root / "runs" / "generator_ar_mnist5k" / "2024-01-01_00-00-00"
    (run / "checkpoints").mkdir(parents=True)
    sd = {**{f"tokenizer.{k}": v for k, v in tok.state_dict().items()},
          **{f"generator.{k}": v for k, v in gen.state_dict().items()}}
    hp = {"role": "generator", "generator": gen_cfg, "tokenizer": tok_cfg, "num_classes": 10,
          "data": OmegaConf.to_container(compose_cfg(DATA).data, resolve=True)}
    torch.save({"state_dict": sd, "hyper_parameters": hp}, run / "checkpoints" / "last.ckpt")
    (run / "metrics.json").write_text(json.dumps({"status": "finished", "paradigm": "ar"}))
    return run


def test_eval_npz_end_to_end(workdir, monkeypatch):
    eval_config()  # puts the tiny classifier into the cache
    val, labels = real_splits()["val"]
    npz = write_npz(workdir / "samples.npz", val[::2], labels[::2])
    genarena_eval(monkeypatch, f"images={npz}", *DOMAIN, "eval.metrics=[fid,kid]", "n=200")
    m = read_json(workdir / "eval" / "domain_n200_seed0" / "metrics.json")
    assert m["eval_n"] == 200 and m["eval_n_real"] == 500 and m["eval_extractor"] == "domain"
    assert m["eval_classifier"].startswith("mnist5k-r16-c1-") and m["kid_subset_size"] == 200
    assert m["fid"] < 5 and m["class_acc"] > 0.7 and "isc_mean" not in m


def test_eval_png_folder(workdir, monkeypatch):
    eval_config()
    folder = workdir / "pngs"
    folder.mkdir()
    for i, img in enumerate(real_splits()["train"][0][::150]):
        Image.fromarray(img[0].numpy()).save(folder / f"{i:03d}.png")
    genarena_eval(monkeypatch, f"images={folder}", *DOMAIN, "eval.metrics=[fid,prc]", f"out={workdir / 'o'}")
    out = read_json(workdir / "o" / "metrics.json")
    assert out["eval_n"] == 30 and "class_acc" not in out and 0 <= out["precision"] <= 1


def test_eval_generator_run(workdir, monkeypatch):
    run = fake_run(workdir)
    eval_config()
    genarena_eval(monkeypatch, f"ckpt={run}", "eval.num_samples=20", "eval.batch_size=10", "eval.extractor=domain",
                  "eval.metrics=[fid,prc]", "sampling.temperature=0.9", TINY_CLASSIFIER_FLOOR)
    out = read_json(run / "eval" / "domain_n20_seed0" / "metrics.json")
    assert out["eval_n"] == 20 and out["eval_data"] == "mnist5k" and out["eval_sampling_temperature"] == 0.9
    assert out["eval_checkpoint"] == "last"  # eval.checkpoint=best, but this run saved no best.ckpt
    eval_dir = run / "eval" / "domain_n20_seed0"
    assert (eval_dir / "metrics.json").is_file() and (eval_dir / "samples.npz").is_file()
    merged = json.loads((run / "metrics.json").read_text())
    assert merged["status"] == "finished" and merged["paradigm"] == "ar"  # kept
    for key in ("fid", "precision", "recall", "class_acc", "sample_s_per_image", "flops_sample_per_image",
                "sampling_steps", "eval_n", "eval_extractor"):
        assert key in merged, key
    assert merged["sampling_steps"] == 16 and merged["flops_sample_per_image"] > 0
    with np.load(eval_dir / "samples.npz") as f:
        assert f["images"].shape == (20, 16, 16, 1) and sorted(set(f["labels"].tolist())) == list(range(10))


def test_run_directory_checkpoint_is_best_or_last(workdir, caplog, monkeypatch):
    run = fake_run(workdir)
    last = run / "checkpoints" / "last.ckpt"
    assert resolve_checkpoint(run, "last") == last
    with caplog.at_level(logging.WARNING, logger="genarena"):
        assert resolve_checkpoint(run, "best") == last
    assert "no checkpoints/best.ckpt" in caplog.text
    best = run / "checkpoints" / "best.ckpt"
    best.write_bytes(last.read_bytes())
    assert resolve_checkpoint(run, "best") == best and resolve_checkpoint(run, "last") == last
    assert resolve_checkpoint(last, "best") == last  # a file is taken as given
    with pytest.raises(ConfigError, match="checkpoint='first' is not accepted; choose one of best, last"):
        resolve_checkpoint(run, "first")
    eval_config()
    args = ["eval.num_samples=10", "eval.batch_size=10", "eval.extractor=domain", "eval.metrics=[fid]",
            TINY_CLASSIFIER_FLOOR]
    genarena_eval(monkeypatch, f"ckpt={run}", *args)
    assert read_json(run / "eval" / "domain_n10_seed0" / "metrics.json")["eval_checkpoint"] == "best"
    genarena_eval(monkeypatch, f"ckpt={run}", "eval.checkpoint=last", *args)
    assert read_json(run / "eval" / "domain_n10_seed0" / "metrics.json")["eval_checkpoint"] == "last"


@pytest.mark.parametrize("argv, message", [
    (["images=nothing.npz", "data=mnist5k"], "neither an .npz file nor a folder"),
    (["ckpt=a", "images=b"], "exactly one of ckpt="),
    (["images=x.npz", "data=mnist5k", "eval.metrics=[fid,lpips]"], "subset of fid, isc, kid, prc"),
    (["images=x.npz", "data=mnist5k", "eval.extractor=clip"], "eval.extractor='clip' is not accepted"),
    (["ckpt=no/such/run"], "does not exist"),
    (["ckpt=no/such/run", "eval.checkpoint=first"], "checkpoint='first' is not accepted; choose one of best, last"),
    (["ckpt=no/such/run", "n=5"], "n= applies to images="),
    (["ckpt=no/such/run", "data=digits"], "data=<option> applies to images= only"),
    (["ckpt=no/such/run", "sampling.cfg=2", "sampling.bogus=1"], "bogus"),
])
def test_eval_errors_are_one_line(workdir, monkeypatch, capsys, argv, message):
    (workdir / "x.npz").write_bytes(b"")
    monkeypatch.setattr(sys, "argv", ["genarena-eval", *argv])
    with pytest.raises(SystemExit) as exc:
        evaluate.main()
    err = capsys.readouterr().err.strip()
    assert exc.value.code != 0 and "Traceback" not in err
    assert message in err


def test_wandb_run_is_found_and_failures_are_one_warning(tmp_path, monkeypatch, caplog):
    assert find_wandb_run_id(tmp_path) is None
    for name in ("run-20240101_000000-old1", "offline-run-20240202_000000-new2", "latest-run"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert find_wandb_run_id(tmp_path) == "new2"
    (tmp_path / "config.yaml").write_text("logger: {project: p, mode: offline}\n")
    import wandb

    def broken(**kwargs):
        raise RuntimeError("no wandb here")

    monkeypatch.setattr(wandb, "init", broken)
    with caplog.at_level(logging.WARNING):
        assert log_evaluation(tmp_path, {"fid": 1.0}, {"steps": 4}) is False
    assert [r.getMessage() for r in caplog.records] == [
        "could not start W&B run new2 in offline mode (RuntimeError: no wandb here)"]



def test_fid_against_written_statistics_equals_fid_against_the_split(workdir, monkeypatch):
    eval_config()
    val, labels = real_splits()["val"]
    npz = write_npz(workdir / "samples.npz", val[::2], labels[::2])
    stats = workdir / "stats" / "mnist5k_val.npz"
    genarena_eval(monkeypatch, f"write_statistics={stats}", *DOMAIN)
    with np.load(stats) as f:
        assert f["mu"].shape == (32,) and f["sigma"].shape == (32, 32) and int(f["n"]) == 500
        assert str(f["extractor"]).startswith("domain-")
    genarena_eval(monkeypatch, f"images={npz}", *DOMAIN, "eval.metrics=[fid]", f"out={workdir / 'split'}")
    genarena_eval(monkeypatch, f"images={npz}", *DOMAIN, "eval.metrics=[fid]", f"eval.fid_statistics_file={stats}",
                  f"out={workdir / 'file'}")
    against_split = read_json(workdir / "split" / "metrics.json")
    against_file = read_json(workdir / "file" / "metrics.json")
    assert against_file["eval_fid_reference"] == "mnist5k_val.npz" and "eval_n_real" not in against_file
    assert against_file["fid"] == pytest.approx(against_split["fid"], rel=1e-4, abs=1e-4)
    # statistics of another network are refused, not silently compared
    np.savez(workdir / "other.npz", mu=np.zeros(32), sigma=np.eye(32), extractor=np.array("inception"))
    with pytest.raises(SystemExit):
        genarena_eval(monkeypatch, f"images={npz}", *DOMAIN, "eval.metrics=[fid]",
                      f"eval.fid_statistics_file={workdir / 'other.npz'}")


def test_adm_sample_layout_round_trips_through_eval(workdir, monkeypatch):
    from genarena.cli import sample

    run = fake_run(workdir)
    eval_config()
    for fmt in ("genarena", "adm"):
        monkeypatch.setattr(sys, "argv", ["genarena-sample", f"ckpt={run}", "n=20", f"format={fmt}",
                                          f"out={workdir / fmt}", "checkpoint=last"])
        sample.main()
    with np.load(workdir / "adm" / "samples.npz") as adm, np.load(workdir / "genarena" / "samples.npz") as ours:
        assert adm["arr_0"].dtype == np.uint8 and adm["arr_0"].shape == (20, 16, 16, 3)
        assert np.array_equal(adm["arr_0"][..., :1], ours["images"]) and np.array_equal(adm["arr_1"], ours["labels"])
    for fmt in ("genarena", "adm"):
        genarena_eval(monkeypatch, f"images={workdir / fmt / 'samples.npz'}", *DOMAIN, "eval.metrics=[fid]")
    fids = [read_json(workdir / f / "eval" / "domain_n20_seed0" / "metrics.json")["fid"] for f in ("genarena", "adm")]
    assert fids[0] == pytest.approx(fids[1])

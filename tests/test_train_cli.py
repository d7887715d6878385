"""`genarena-train` end to end: run directories, checkpoints that load, metrics.json, skip-if-finished."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genarena.checkpoints import read_checkpoint, resolve_checkpoint
from genarena.generators import load_generator
from genarena.tokenizers import load_tokenizer

FAST = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "log.sample_every_n_steps=2", "log.grid_size=10", "logger=csv"]


def train(workdir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", *FAST, *overrides], cwd=workdir,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def only_run(workdir: Path, experiment: str) -> Path:
    runs = sorted((workdir / "runs" / experiment).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny msvq tokenizer and one tiny var generator trained through the CLI."""
    wd = tmp_path_factory.mktemp("cli")
    env_over = [f"paths.runs_dir={wd / 'runs'}", f"paths.cache_dir={wd / 'cache'}"]
    train(wd, "task=tokenizer", "tokenizer=msvq", *env_over)
    tok_run = only_run(wd, "tokenizer_msvq_mnist5k")
    train(wd, "task=generator", "generator=var", "generator.depth=1", f"tokenizer.ckpt={tok_run}", *env_over)
    gen_run = only_run(wd, "generator_var_mnist5k")
    return wd, tok_run, gen_run, env_over


def test_tokenizer_run_directory(trained):
    _, tok_run, _, _ = trained
    assert (tok_run / "config.yaml").is_file() and (tok_run / "checkpoints" / "last.ckpt").is_file()
    assert list((tok_run / "samples").glob("reconstruction_per_scale_step*.png"))
    m = json.loads((tok_run / "metrics.json").read_text())
    assert m["status"] == "finished" and m["steps"] == 4 and m["params"] > 0
    assert m["kind"] == "multiscale" and "val_psnr" in m and "val_usage_s0" in m
    tok, hp = load_tokenizer(tok_run)
    assert tok.kind == "multiscale" and not any(p.requires_grad for p in tok.parameters())


def test_generator_run_directory(trained):
    _, tok_run, gen_run, _ = trained
    m = json.loads((gen_run / "metrics.json").read_text())
    assert m["status"] == "finished" and m["paradigm"] == "var" and m["steps"] == 4
    for key in ("params", "params_non_embedding", "flops_train_per_image", "flops_sample_per_image", "tokens_seen",
                "images_seen", "val_loss", "val_loss_best", "val_acc", "val_loss_last", "val_loss_scale_mean",
                "val_token_error", "train_time_s", "sampling_steps"):
        assert key in m, key
    assert m["tokens_per_image"] == 130 and m["images_seen"] == 4 * 64
    assert list((gen_run / "samples").glob("samples_step*.png"))
    assert list((gen_run / "samples").glob("coarse_to_fine_step*.png"))
    best = read_checkpoint(resolve_checkpoint(gen_run, "best"), expected_role="generator")
    assert Path(best["path"]).name == "best.ckpt" and best["global_step"] in (2, 4)  # validated at steps 2, 4
    gen, tok, hp = load_generator(gen_run)
    out = gen.sample(torch.tensor([3]), generator=torch.Generator().manual_seed(0), **hp["generator"]["sampling"])
    assert tok.decode(out).shape == (1, 1, 32, 32)


def test_token_cache_is_reused(trained):
    wd, tok_run, _, env_over = trained
    cached = list((wd / "cache" / "tokens").glob("*.pt"))
    assert len(cached) == 2  # train and val split
    stamps = [p.stat().st_mtime for p in cached]
    train(wd, "task=generator", "generator=var", "generator.depth=1", "seed=1", f"tokenizer.ckpt={tok_run}", *env_over)
    assert [p.stat().st_mtime for p in cached] == stamps


def test_identical_run_is_skipped_unless_forced(trained):
    wd, tok_run, _, env_over = trained
    args = ["task=generator", "generator=var", "generator.depth=1", f"tokenizer.ckpt={tok_run}", *env_over]
    proc = train(wd, *args)
    assert "skipping" in proc.stdout + proc.stderr
    before = len(list((wd / "runs" / "generator_var_mnist5k").iterdir()))
    train(wd, *args, "force=true")
    assert len(list((wd / "runs" / "generator_var_mnist5k").iterdir())) == before + 1


def test_wrong_tokenizer_kind_is_a_clear_error(trained):
    wd, tok_run, _, env_over = trained
    proc = train(wd, "task=generator", "generator=mar", f"tokenizer.ckpt={tok_run}", *env_over, check=False)
    assert proc.returncode == 2
    assert "generator 'mar' has the diffusion head" in proc.stderr and "tokenizer=kl" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path):
    wd, _, _, env_over = trained
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = train(wd, "task=generator", "generator=var", f"tokenizer.ckpt={bad}", *env_over, check=False)
    assert proc.returncode == 2 and "corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_multirun_sweep_writes_one_directory_per_job(workdir):
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", "-m", *FAST, "task=tokenizer",
                           "tokenizer=vq,kl", "sweep_name=tiny"], cwd=workdir, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("vq", "kl"):
        jobs = list((workdir / "runs" / f"tokenizer_{name}_mnist5k" / "tiny").iterdir())
        assert len(jobs) == 1 and (jobs[0] / "metrics.json").is_file()
    # re-running the same sweep skips the jobs that finished (same directories, same configs)
    stamp = {p: p.stat().st_mtime for p in (workdir / "runs").rglob("last.ckpt")}
    again = subprocess.run([sys.executable, "-m", "genarena.cli.train", "-m", *FAST, "task=tokenizer",
                            "tokenizer=vq,kl", "sweep_name=tiny"], cwd=workdir, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (again.stdout + again.stderr).count("skipping: an identical run already finished") == 2
    assert stamp == {p: p.stat().st_mtime for p in (workdir / "runs").rglob("last.ckpt")}


def test_wandb_logger_runs_offline_without_a_key(workdir):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(workdir)  # no ~/.netrc, so no API key
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", *FAST, "task=tokenizer", "tokenizer=vq",
                           "logger=wandb"], cwd=workdir, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run(workdir, "tokenizer_vq_mnist5k")
    offline = list((run / "wandb").glob("offline-run-*"))
    assert offline, "expected an offline W&B run to sync later"
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"
    assert list(offline[0].rglob("*.wandb"))

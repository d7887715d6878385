"""Every experiment and sweep preset: its values win over the root config, and it runs (one step per job)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from genarena.config import config_dir, validate

from .conftest import compose_cfg

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))
SWEEPS = sorted(p.stem for p in (config_dir() / "sweep").glob("*.yaml"))
ONE_STEP = ["trainer.max_steps=1", "trainer.val_check_interval=1", "trainer.limit_val_batches=1",
            "trainer.enable_progress_bar=false", "log.sample_every_n_steps=0", "logger=csv"]


def leaves(node: dict, prefix: str = ""):
    """(dotted key, value) of every leaf a preset sets (its defaults list and hydra settings aside)."""
    for key, value in node.items():
        if not prefix and key in ("defaults", "hydra"):
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from leaves(value, path + ".")
        else:
            yield path, value


def preset_overrides(group: str, name: str) -> list[str]:
    return [f"experiment={name}"] if group == "experiment" else [f"+sweep={name}"]


@pytest.mark.parametrize("group, name", [("experiment", n) for n in EXPERIMENTS] + [("sweep", n) for n in SWEEPS])
def test_preset_values_win_over_the_root_config(group, name):
    raw = OmegaConf.to_container(OmegaConf.load(config_dir() / group / f"{name}.yaml"), resolve=False)
    composed = OmegaConf.to_container(compose_cfg(preset_overrides(group, name)), resolve=False)  # ${...} as written
    checked = 0
    for key, value in leaves(raw):
        got = composed
        for part in key.split("."):
            got = got[part]
        assert got == value, f"{group}={name} sets {key}={value!r}, but the composed config has {got!r}"
        checked += 1
    assert checked >= 5


def test_imagenet256_preset_brings_its_evaluation_settings():
    cfg = compose_cfg(["experiment=imagenet256"])
    assert cfg.eval.every_n_steps == 25000 and cfg.eval.num_samples == 50000 and cfg.eval.extractor == "inception"
    assert cfg.trainer.strategy == "ddp" and cfg.logger.name == "wandb" and cfg.data.resolution == 256


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def finished(root: Path) -> list[dict]:
    runs = [json.loads(p.read_text()) for p in root.rglob("metrics.json") if "eval" not in p.parts]
    assert runs and all(m["status"] == "finished" for m in runs), runs
    return runs


def test_experiment_presets_run_one_step(workdir):
    run(workdir, "experiment=smoke", "task=tokenizer", "tokenizer=vq", *ONE_STEP)
    run(workdir, "experiment=smoke", "task=generator", "generator=ar", "tokenizer.ckpt=auto", *ONE_STEP)
    assert {m["task"] for m in finished(workdir / "runs")} == {"tokenizer", "generator"}
    # imagenet256 on this CPU: a tiny image folder, one process, batch 2 (the hardware is a runtime knob)
    root = workdir / "imagenet"
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / label / f"{i}.png")
    cfg = compose_cfg(["experiment=imagenet256", f"data.root={root}", "trainer=cpu", "tokenizer=vq"])
    validate(cfg)
    run(workdir, "experiment=imagenet256", f"data.root={root}", "trainer=cpu", "tokenizer=vq", "data.batch_size=2",
        "data.num_workers=0", *ONE_STEP)
    [m] = [m for m in finished(workdir / "runs") if m.get("resolution") == 256]
    assert m["steps"] == 1 and m["resolution"] == 256


FAST_SWEEP = "depth"  # make test runs this one (4 jobs); make test-all runs every sweep preset


@pytest.mark.parametrize("sweep", [s if s == FAST_SWEEP else pytest.param(s, marks=pytest.mark.slow) for s in SWEEPS])
def test_sweep_presets_run_one_step_per_job(workdir, sweep):
    for tokenizer in ("vq", "msvq", "kl", *(["mskl"] if sweep == "matrix" else [])):  # matrix: var_diffusion's too
        run(workdir, "task=tokenizer", f"tokenizer={tokenizer}", *ONE_STEP)
    run(workdir, "-m", f"+sweep={sweep}", *ONE_STEP)
    runs = [m for m in finished(workdir / "runs") if m.get("sweep") == sweep]
    params = OmegaConf.load(config_dir() / "sweep" / f"{sweep}.yaml").hydra.sweeper.params
    expected = 1
    for key, values in params.items():
        if key != "trainer.max_steps":  # swept lengths collapse to the one step asked for
            expected *= len(str(values).split(","))
    assert len(runs) == expected, (sweep, len(runs))
    assert all(m["steps"] == 1 for m in runs)

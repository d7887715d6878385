"""Distributed training on CPU: 2 DDP processes (gloo) follow 1 process at the same global batch and seed, the
token cache is encoded once by processes that share it, the SLURM launcher starts one task per device, and FSDP
(GPU-only in Lightning) is refused on CPU with a clear message.

The generator is a tiny raster AR without class dropout: its training loss is then a deterministic function
of the weights and the batch (random masks or label drops would be drawn per rank, not per global batch).
"""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from genarena.config import config_dir, register_configs
from genarena.data.token_cache import TokenDataModule
from genarena.errors import ConfigError
from genarena.runs import read_metrics
from genarena.tokenizers import load_tokenizer
from genarena.training import build_trainer, run_training

from .conftest import compose_cfg, tiny_generator_overrides, tiny_tokenizer_overrides

QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "log.sample_every_n_steps=0",
         "trainer.num_threads=1", "logger=csv"]
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
GLOBAL_BATCH = 16


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    cache = f"paths.cache_dir={root / 'cache'}"
    tok = run_training(compose_cfg(["task=tokenizer", *tiny_tokenizer_overrides("vq"), "experiment=smoke",
                                    "trainer.max_steps=4", *QUIET, cache, f"paths.runs_dir={root / 'tok'}"]))
    return root, tok["run_dir"], cache


def generator_args(tok_run: str, cache: str, steps: int) -> list[str]:
    return ["task=generator", *tiny_generator_overrides("ar"), "generator.class_dropout=0", "experiment=smoke",
            f"tokenizer.ckpt={tok_run}", f"trainer.max_steps={steps}", "trainer.val_check_interval=5",
            f"log.checkpoint_every_n_steps={steps}", *QUIET, cache]


def val_curve(run_dir: str | Path) -> dict[int, float]:
    with open(Path(run_dir) / "csv" / "metrics.csv", newline="") as f:
        return {int(r["step"]): float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")}


def ddp_run(root: Path, args: list[str], runs_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", *args, *DDP,
                           f"data.batch_size={GLOBAL_BATCH // 2}", f"paths.runs_dir={runs_dir}"],
                          cwd=root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [run] = [p for p in runs_dir.glob("*/*") if p.is_dir()]
    return read_metrics(run)


def compare_with_one_process(tokenizer, steps: int, name: str) -> tuple[dict, dict]:
    root, tok_run, cache = tokenizer
    args = generator_args(tok_run, cache, steps)
    one = run_training(compose_cfg([*args, f"data.batch_size={GLOBAL_BATCH}", f"paths.runs_dir={root / name / '1'}"]))
    two = ddp_run(root, args, root / name / "2")
    assert two["status"] == "finished" and two["steps"] == steps
    assert two["images_seen"] == one["images_seen"] == steps * GLOBAL_BATCH  # per-rank batch x 2 processes
    assert abs(two["val_loss"] - one["val_loss"]) < 1e-5
    return one, two


def test_ddp_on_two_cpu_processes_smoke(tokenizer):
    one, two = compare_with_one_process(tokenizer, 5, "smoke")
    assert (Path(two["run_dir"]) / "train_ddp_process_1.log").is_file()  # the second process logged into the run


@pytest.mark.slow
def test_ddp_loss_curve_equals_one_process_at_the_same_global_batch(tokenizer):
    one, two = compare_with_one_process(tokenizer, 40, "curve")
    a, b = val_curve(one["run_dir"]), val_curve(two["run_dir"])
    assert sorted(a) == sorted(b) and len(a) >= 8
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), (a, b)


def test_processes_sharing_a_token_cache_encode_it_once(tokenizer, tmp_path, monkeypatch):
    import genarena.data.token_cache as token_cache

    _, tok_run, _ = tokenizer
    tok, hp = load_tokenizer(tok_run)
    data = compose_cfg(["experiment=smoke"]).data
    encoded: list[str] = []
    encode = token_cache.encode_split

    def counting(*args, **kwargs):
        encoded.append(args[3])
        return encode(*args, **kwargs)

    monkeypatch.setattr(token_cache, "encode_split", counting)
    modules = [TokenDataModule(data, tok, hp["path"], tmp_path, seed=0) for _ in range(2)]
    threads = [threading.Thread(target=m.setup) for m in modules]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(encoded) == ["encoding train", "encoding val"]  # each split once, though both needed it
    for split in ("train", "val"):
        a, b = (m.dataset(split).cached["tokens"] for m in modules)
        assert a.equal(b)


def slurm_launcher(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", [*overrides, "hydra/launcher=slurm"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


@pytest.mark.parametrize("overrides, tasks", [
    (["trainer.devices=2"], 2),                                              # a number of devices
    (["trainer=gpu"], 1),
    (["trainer=ddp", "hydra.launcher.gpus_per_node=4"], 4),                  # devices=-1: every GPU of the node
    (["trainer=ddp", "trainer.devices=[0,1,2]", "hydra.launcher.gpus_per_node=3"], 3),
])
def test_slurm_launcher_starts_one_task_per_device_and_requeues(overrides, tasks):
    launcher = slurm_launcher(overrides)
    assert launcher["tasks_per_node"] == tasks
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] > 0


def test_fsdp_on_cpu_is_a_clear_error(tmp_path):
    cfg = compose_cfg(["trainer=fsdp", "trainer.accelerator=cpu"])
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp needs GPUs"):
        build_trainer(cfg, tmp_path, logger=False)
    fsdp = (config_dir() / "trainer" / "fsdp.yaml").read_text()
    assert "GPU" in fsdp and "CPU" in fsdp  # the config says it is GPU-only, and why

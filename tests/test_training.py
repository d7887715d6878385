"""The training layer: trainer.* reaches lightning.Trainer or is rejected, callbacks come from conf/callbacks,
debug presets, EMA through Lightning's weight averaging, and a console that prints each line once."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
    ModelSummary,
)

from genarena.errors import ConfigError
from genarena.generators import load_generator
from genarena.lit.callbacks import ImageGridCallback, StepProgressBar
from genarena.lit.evaluation import PeriodicEvalCallback
from genarena.lit.resume import PeriodicCheckpoint
from genarena.training import build_trainer, run_training
from genarena.training.trainer import build_callbacks

from .conftest import compose_cfg, tiny_generator_overrides, tiny_tokenizer_overrides

FAST = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false", "log.sample_every_n_steps=0", "logger=none"]


def test_trainer_keys_reach_lightning(tmp_path):
    cfg = compose_cfg(["trainer.accumulate_grad_batches=4", "+trainer.gradient_clip_val=0.5",
                       "trainer.max_steps=7", "trainer.deterministic=true"])
    trainer = build_trainer(cfg, tmp_path, logger=False)
    assert trainer.accumulate_grad_batches == 4 and trainer.gradient_clip_val == 0.5 and trainer.max_steps == 7


@pytest.mark.parametrize("override, message", [
    ("+trainer.accumulate_grad_batchs=4", "trainer.accumulate_grad_batchs is not an argument of lightning.Trainer"),
    ("+trainer.logger=false", "trainer.logger is set by genarena"),
    ("+trainer.default_root_dir=/elsewhere", "trainer.default_root_dir is set by genarena"),
    ("trainer.precision=foo", "trainer:"),
])
def test_trainer_keys_that_cannot_work_are_rejected(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        build_trainer(compose_cfg([override]), tmp_path, logger=False)


def test_default_callbacks_and_their_switches(tmp_path):
    cfg = compose_cfg(["task=generator", "eval.every_n_steps=5"])
    kinds = [type(c) for c in build_callbacks(cfg, tmp_path, has_logger=True)]
    # the periodic (resume) checkpoint comes last: a save after a validation holds the best checkpoint's new state
    assert kinds == [ModelCheckpoint, LearningRateMonitor, ImageGridCallback, PeriodicEvalCallback,
                     ModelSummary, StepProgressBar, PeriodicCheckpoint]
    best, checkpoint = (build_callbacks(cfg, tmp_path, has_logger=True)[i] for i in (0, -1))
    assert checkpoint.dirpath == str(tmp_path / "checkpoints") and best.monitor == "val/loss"
    # no logger: no LR monitor; no progress bar or summary when the trainer has them off
    off = compose_cfg(["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"])
    kinds = [type(c) for c in build_callbacks(off, tmp_path, has_logger=False)]
    assert LearningRateMonitor not in kinds and StepProgressBar not in kinds and ModelSummary not in kinds
    # optional ones switch on; any one can be dropped
    on = compose_cfg(["callbacks.ema.enabled=true", "callbacks.ema.decay=0.99", "callbacks.early_stopping.enabled=true",
                      "callbacks.early_stopping.patience=2", "callbacks.sample_grids=null"])
    callbacks = build_callbacks(on, tmp_path, has_logger=False)
    ema = [c for c in callbacks if isinstance(c, EMAWeightAveraging)]
    stop = [c for c in callbacks if isinstance(c, EarlyStopping)]
    assert len(ema) == 1 and len(stop) == 1 and stop[0].patience == 2
    assert not any(isinstance(c, ImageGridCallback) for c in callbacks)


def test_a_callback_that_cannot_be_built_is_named(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.checkpoint"):
        build_callbacks(compose_cfg(["callbacks.checkpoint._target_=no.such.Callback"]), tmp_path, has_logger=False)
    with pytest.raises(ConfigError, match="callbacks.checkpoint"):
        build_callbacks(compose_cfg(["+callbacks.checkpoint.bogus_argument=1"]), tmp_path, has_logger=False)


@pytest.mark.parametrize("preset, key, value", [
    ("fast_dev_run", "trainer.fast_dev_run", True), ("overfit", "trainer.overfit_batches", 1),
    ("anomaly", "trainer.detect_anomaly", True), ("profiler", "trainer.profiler", "simple"),
])
def test_debug_presets(tmp_path, preset, key, value):
    from omegaconf import OmegaConf

    cfg = compose_cfg([f"debug={preset}"])
    assert OmegaConf.select(cfg, key) == value
    build_trainer(cfg, tmp_path, logger=False)  # Lightning accepts it


def test_ema_is_lightnings_weight_averaging_and_sampling_uses_it(workdir):
    tok = run_training(compose_cfg([*tiny_tokenizer_overrides("vq"), "task=tokenizer", *FAST]))
    cfg = compose_cfg(["task=generator", *tiny_generator_overrides("ar"), f"tokenizer.ckpt={tok['run_dir']}", *FAST,
                       "callbacks.ema.enabled=true", "callbacks.ema.decay=0.5"])
    metrics = run_training(cfg)
    assert metrics["status"] == "finished"
    ckpt = torch.load(f"{metrics['run_dir']}/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert "current_model_state" in ckpt  # the trained weights beside the averaged ones
    averaged, _, hp = load_generator(metrics["run_dir"] + "/checkpoints/last.ckpt", use_ema=True)
    trained, _, hp_trained = load_generator(metrics["run_dir"] + "/checkpoints/last.ckpt", use_ema=False)
    assert hp["weights"] == "ema" and hp_trained["weights"] == "trained"
    a, t = averaged.state_dict(), trained.state_dict()
    assert any(not torch.equal(a[k], t[k]) for k in a)
    sd = {k.removeprefix("generator."): v for k, v in ckpt["current_model_state"].items() if k.startswith("generator.")}
    assert all(torch.equal(t[k], sd[k]) for k in t)


def test_console_prints_each_line_once_without_adverts_and_counts_steps(workdir):
    args = ["task=tokenizer", *tiny_tokenizer_overrides("vq"), "trainer.max_steps=3", "trainer.val_check_interval=3",
            "trainer.limit_val_batches=1", "log.sample_every_n_steps=0", "logger=csv"]
    proc = subprocess.run([sys.executable, "-m", "genarena.cli.train", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert out.count("`Trainer.fit` stopped") == 1
    assert "Tip:" not in out and "litlogger" not in out and "Epoch 0/" not in out
    assert "train (steps)" in out and "3/3" in out


def test_trainer_compile_compiles_the_generator_loss_that_training_runs(workdir, monkeypatch):
    """``trainer.compile=true`` must reach the training step: it calls ``generator.loss``, not ``forward`` (which is
    all ``nn.Module.compile`` would wrap). torch.compile is replaced by a recording pass-through (no compiler)."""
    tok = run_training(compose_cfg([*tiny_tokenizer_overrides("vq"), "task=tokenizer", *FAST]))
    compiled, calls = [], []

    def recording_compile(fn, *args, **kwargs):
        compiled.append(fn)

        def run(*a, **k):
            calls.append(getattr(fn, "__name__", fn))
            return fn(*a, **k)
        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    cfg = compose_cfg(["task=generator", *tiny_generator_overrides("ar"), f"tokenizer.ckpt={tok['run_dir']}", *FAST,
                       "trainer.compile=true", "callbacks.ema.enabled=true"])
    metrics = run_training(cfg)
    assert metrics["status"] == "finished"
    losses = [fn for fn in compiled if getattr(fn, "__name__", "") == "loss"]
    assert losses and all(type(fn.__self__).__name__ == "RasterAR" for fn in losses)  # the generator's bound loss()
    assert calls.count("loss") >= metrics["steps"]  # every training step went through the compiled loss
    plain = compose_cfg(["task=generator", *tiny_generator_overrides("ar"), f"tokenizer.ckpt={tok['run_dir']}",
                         *FAST])
    compiled.clear()
    run_training(plain)
    assert not compiled  # off by default

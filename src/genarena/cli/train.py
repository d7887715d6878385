"""``genarena-train``: the Hydra app that trains a tokenizer, the domain classifier or a generator.

    genarena-train task=tokenizer tokenizer=msvq data=mnist5k
    genarena-train task=classifier data=mnist5k
    genarena-train task=generator generator=var tokenizer.ckpt=runs/tokenizer_msvq_mnist5k/<time>
    genarena-train -m task=generator generator=var,ar generator.depth=1,2,4 ...   (a sweep)

Each run writes ``config.yaml`` (resolved), ``checkpoints/last.ckpt``, image grids under ``samples/``
and ``metrics.json`` into its own run directory.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from genarena.config import config_dir, register_configs, validate
from genarena.data import ImageDataModule
from genarena.errors import ConfigError, GenArenaError
from genarena.lit.callbacks import ImageGridCallback
from genarena.lit.classifier_module import ClassifierModule
from genarena.lit.loggers import build_logger, finish_wandb
from genarena.lit.tokenizer_module import TokenizerModule
from genarena.metrics.classifier import classifier_cache_path, save_classifier
from genarena.runs import (
    config_fingerprint,
    find_finished_run,
    find_tokenizer_run,
    read_metrics,
    write_metrics,
)

log = logging.getLogger("genarena")


def to_dict(node) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)


def current_run_dir(cfg: DictConfig) -> Path:
    """The Hydra output directory, or a fresh ``runs/<experiment>/<time>`` outside Hydra."""
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        d = Path(cfg.paths.runs_dir) / cfg.experiment_name / time.strftime("%Y-%m-%d_%H-%M-%S")
        d.mkdir(parents=True, exist_ok=True)
        return d


# Lightning warnings that say nothing about a genarena run, each with why it is safe to drop:
# - tokenizers train with manual optimisation (tokenizer + optional discriminator), so a periodic checkpoint holds the
#   weights after the step: the state a resumed run continues from, which is what we want;
# - a generator's tokenizer is frozen and kept in eval mode on purpose (Lightning counts its modules);
# - Lightning's own pytree helper calls a torch API that newer torch deprecates.
KNOWN_LIGHTNING_WARNINGS = (
    "Using ModelCheckpoint with manual optimization",
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def build_trainer(
    cfg: DictConfig, run_dir: Path, logger, extra_callbacks: list, monitor: str | None = None
) -> L.Trainer:
    for message in KNOWN_LIGHTNING_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    t = cfg.trainer
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [ModelCheckpoint(dirpath=ckpt_dir, filename="step{step:06d}", auto_insert_metric_name=False,
                                 every_n_train_steps=cfg.log.checkpoint_every_n_steps, save_top_k=1),
                 *extra_callbacks]
    if monitor:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min",
                                         save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False))
    if logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, max_steps=t.max_steps, max_time=t.max_time, val_check_interval=t.val_check_interval,
        check_val_every_n_epoch=None, limit_val_batches=t.limit_val_batches, num_sanity_val_steps=0,
        log_every_n_steps=t.log_every_n_steps, enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic, logger=logger, callbacks=callbacks, default_root_dir=str(run_dir),
        enable_model_summary=False,
    )


def _final_scalars(results: list[dict[str, float]], prefix: str = "") -> dict[str, float]:
    out = {}
    for d in results:
        out.update({prefix + k.replace("/", "_"): float(v) for k, v in d.items()})
    return out


def _num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def train_tokenizer(cfg: DictConfig, run_dir: Path, logger) -> dict[str, Any]:
    dm = ImageDataModule(cfg.data)
    dm.setup()
    grid_images = torch.stack([dm.dataset("val")[i][0] for i in range(min(8, len(dm.dataset("val"))))])
    module = TokenizerModule(to_dict(cfg.tokenizer), to_dict(cfg.data), cfg.optim, cfg.trainer.max_steps,
                             dm.num_classes, grid_images)
    if cfg.trainer.compile:
        module.tokenizer.compile()
    trainer = build_trainer(cfg, run_dir, logger,
                            [ImageGridCallback(cfg.log.sample_every_n_steps, run_dir / "samples")])
    t0 = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume)
    wall = time.time() - t0
    scale = module.measure_scale_factor(dm.train_dataloader())
    final = trainer.validate(module, datamodule=dm, verbose=False)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    out = {"tokenizer": cfg.tokenizer.name, "params": _num_params(module.tokenizer), "train_time_s": wall,
           "resolution": cfg.data.resolution, "channels": cfg.data.channels,
           "steps": trainer.global_step, **module.tokenizer.describe(), **_final_scalars(final)}
    if scale is not None:
        out["scale_factor"] = scale
    return out


def train_classifier(cfg: DictConfig, run_dir: Path, logger) -> dict[str, Any]:
    dm = ImageDataModule(cfg.data)
    dm.setup()
    c = cfg.classifier
    module = ClassifierModule(cfg.data.channels, dm.num_classes, c.ch, c.feature_dim, cfg.optim, cfg.trainer.max_steps)
    trainer = build_trainer(cfg, run_dir, logger, [])
    t0 = time.time()
    trainer.fit(module, datamodule=dm, ckpt_path=cfg.resume)
    wall = time.time() - t0
    final = trainer.validate(module, datamodule=dm, verbose=False)
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    scalars = _final_scalars(final)
    meta = {"channels": cfg.data.channels, "num_classes": dm.num_classes, "ch": c.ch, "feature_dim": c.feature_dim,
            "data": to_dict(cfg.data), "val_acc": scalars.get("val_acc"), "run_dir": str(run_dir)}
    cache = classifier_cache_path(cfg.paths.cache_dir, cfg.data)
    if trainer.is_global_zero:
        save_classifier(module.model.cpu(), cache, meta)
        log.info("domain classifier of %s (val acc %.4f) cached at %s", cfg.data.name, scalars.get("val_acc", 0), cache)
    return {"params": _num_params(module.model), "train_time_s": wall, "steps": trainer.global_step,
            "classifier_cache": str(cache), **scalars}


def train_generator(cfg: DictConfig, run_dir: Path, logger) -> dict[str, Any]:
    from genarena.lit.generator_module import fit_generator

    return fit_generator(cfg, run_dir, logger, build_trainer)


TASK_FUNCTIONS = {"tokenizer": train_tokenizer, "classifier": train_classifier, "generator": train_generator}


def resolve_auto_tokenizer(cfg: DictConfig) -> None:
    """``tokenizer.ckpt=auto``: the newest finished tokenizer run of the kind the generator needs, on the
    same data; written into ``cfg`` so the resolved config (and its fingerprint) names the real file."""
    if cfg.task != "generator" or cfg.tokenizer.ckpt != "auto":
        return
    from genarena.generators import GENERATORS
    from genarena.generators.base import TOKENIZER_FOR_KIND

    needed = TOKENIZER_FOR_KIND[GENERATORS[cfg.generator.name].requires]
    found = find_tokenizer_run(cfg.paths.runs_dir, needed, cfg.data.name, cfg.data.resolution, cfg.data.channels)
    if found is None:
        raise ConfigError(
            f"tokenizer.ckpt=auto: no finished '{needed}' tokenizer run on data={cfg.data.name} "
            f"({cfg.data.resolution}px, {cfg.data.channels} channel(s)) under {cfg.paths.runs_dir}/; train one with "
            f"`genarena-train task=tokenizer tokenizer={needed} data={cfg.data.name}`")
    log.info("tokenizer.ckpt=auto -> %s", found)
    cfg.tokenizer.ckpt = str(found)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one job of ``cfg.task``; returns its ``metrics.json`` content. Skips a job that already
    finished with an identical config (``force=true`` re-runs it)."""
    validate(cfg)
    resolve_auto_tokenizer(cfg)
    run_dir = current_run_dir(cfg)
    fingerprint = config_fingerprint(cfg)
    if not cfg.force:
        done = find_finished_run(Path(cfg.paths.runs_dir) / cfg.experiment_name, fingerprint)
        if done is not None:  # also the same directory: re-running a sweep skips its finished jobs
            log.info("skipping: an identical run already finished in %s (force=true re-runs it)", done)
            return read_metrics(done)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    base = {"task": cfg.task, "experiment_name": cfg.experiment_name, "sweep": cfg.sweep_name,
            "config_fingerprint": fingerprint, "data": cfg.data.name, "seed": cfg.seed, "run_dir": str(run_dir)}
    write_metrics(run_dir, {**base, "status": "running"})
    logger = build_logger(cfg, run_dir)
    try:
        metrics = {**base, **TASK_FUNCTIONS[cfg.task](cfg, run_dir, logger), "status": "finished"}
        if logger:
            try:
                for lg in ([logger] if not isinstance(logger, list) else logger):
                    if hasattr(lg, "experiment") and hasattr(lg.experiment, "summary"):
                        lg.experiment.summary.update({k: v for k, v in metrics.items()
                                                      if isinstance(v, (int, float, str, bool))})
            except Exception as e:
                log.warning("could not write the W&B summary: %s", e)
        write_metrics(run_dir, metrics)
        log.info("finished: %s", run_dir)
        return metrics
    except BaseException as e:
        write_metrics(run_dir, {**base, "status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    finally:
        finish_wandb()


register_configs()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = run(cfg)
    except GenArenaError as e:
        log.error("%s", e)
        if HydraConfig.get().mode == RunMode.RUN:
            print(f"genarena-train: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    value = metrics.get("val_loss")
    return float(value) if isinstance(value, (int, float)) else None


def main() -> None:
    hydra_main()


if __name__ == "__main__":
    main()

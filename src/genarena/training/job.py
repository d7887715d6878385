"""One training job (``genarena-train``): its run directory, ``metrics.json``, logger, and skip-if-finished.

A run directory holds ``config.yaml`` (resolved), ``checkpoints/``, ``samples/`` and ``metrics.json``
with ``status`` ``running`` -> ``finished`` (or ``failed`` with the error). A job whose resolved config
already finished under the same experiment is skipped (``force=true`` re-runs it). Every check that needs no
work runs before the run directory is created; a job that fails before its first training step leaves no
directory behind, and a directory that recorded another config is never written into.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from genarena.checkpoints import load_file
from genarena.config import unique_suffix, validate
from genarena.errors import ConfigError
from genarena.generators import tokenizer_for
from genarena.lit.loggers import build_logger, finish_wandb, write_summary
from genarena.runs import config_fingerprint, find_finished_run, find_tokenizer_run, read_metrics, write_metrics
from genarena.training.tasks import TASK_FUNCTIONS
from genarena.training.trainer import trainer_arguments, training_started

log = logging.getLogger("genarena")


def current_run_dir(cfg: DictConfig) -> Path:
    """The Hydra output directory inside a Hydra app, else ``<runs_dir>/<experiment>/<time>``."""
    from hydra.core.hydra_config import HydraConfig  # lazy: only needed to ask a running Hydra app

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        return Path(cfg.paths.runs_dir) / cfg.experiment_name / f"{stamp}_{unique_suffix()}"


def resolve_auto_tokenizer(cfg: DictConfig) -> None:
    """``tokenizer.ckpt=auto``: the newest finished tokenizer run of the kind the generator needs, on the
    same data; written into ``cfg`` so the resolved config (and its fingerprint) names the real file."""
    if cfg.task != "generator" or cfg.tokenizer.ckpt != "auto":
        return
    needed = tokenizer_for(cfg.generator.name)
    found = find_tokenizer_run(cfg.paths.runs_dir, needed, cfg.data.name, cfg.data.resolution, cfg.data.channels)
    if found is None:
        raise ConfigError(
            f"tokenizer.ckpt=auto: no finished '{needed}' tokenizer run on data={cfg.data.name} "
            f"({cfg.data.resolution}px, {cfg.data.channels} channel(s)) under {cfg.paths.runs_dir}/; train one with "
            f"`genarena-train task=tokenizer tokenizer={needed} data={cfg.data.name}`")
    log.info("tokenizer.ckpt=auto -> %s", found)
    cfg.tokenizer.ckpt = str(found)


def check_startup(cfg: DictConfig) -> None:
    """Every check that needs no work, before the run directory is created: the config's keys and values
    (:func:`~genarena.config.validate`), the ``trainer.*`` arguments against ``lightning.Trainer``, and that an
    explicit ``resume=<checkpoint>`` loads safely."""
    validate(cfg)
    trainer_arguments(cfg.trainer)
    if cfg.resume and Path(str(cfg.resume)).is_file():  # an explicit checkpoint: unsafe or corrupt files stop here
        load_file(cfg.resume, allow_unsafe=cfg.allow_unsafe_load, what="resume checkpoint")


def check_run_dir(run_dir: Path, fingerprint: str) -> None:
    """A run directory that recorded another config (its ``metrics.json``) is an error, never overwritten."""
    recorded = read_metrics(run_dir).get("config_fingerprint")
    if recorded is not None and recorded != fingerprint:
        raise ConfigError(f"run directory {run_dir} already holds a run of another config (fingerprint {recorded}, "
                          f"this job's {fingerprint}); it is never overwritten: choose another directory")


HYDRA_OWN = (".hydra", "train.log")  # what Hydra writes into a run directory before the job starts (conf/config.yaml)


def is_disposable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds nothing but what Hydra created for this job (or does not exist): only such a
    directory is removed when the job fails before training starts."""
    if not run_dir.exists():
        return True
    return run_dir.is_dir() and all(p.name in HYDRA_OWN for p in run_dir.iterdir())


def discard_run_dir(run_dir: Path, runs_dir: str | Path) -> None:
    """Remove a job's own run directory and the empty folders above it, up to ``runs_dir`` (rank zero only)."""
    if rank_zero_only.rank != 0 or not run_dir.exists():
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    root = Path(runs_dir).resolve()
    parent = run_dir.resolve().parent
    while parent != root and root in parent.parents and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    log.debug("removed %s: the job stopped before training started", run_dir)


def run_training(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Run one job of ``cfg.task`` in ``run_dir`` (default: Hydra's output directory, or a new timestamped
    one); returns its ``metrics.json`` content. Skips a job that already finished with an identical config.
    A job that stops before its first training step (a bad value, a bad checkpoint, a skip) leaves no directory."""
    run_dir = Path(run_dir) if run_dir is not None else current_run_dir(cfg)
    disposable = is_disposable(run_dir)
    try:
        metrics = _run_job(cfg, run_dir)
    except BaseException:
        if disposable and not training_started(run_dir):
            discard_run_dir(run_dir, cfg.paths.runs_dir)
        raise
    if disposable and not (run_dir / "metrics.json").is_file():  # skipped: an identical run finished elsewhere
        discard_run_dir(run_dir, cfg.paths.runs_dir)
    return metrics


def _run_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    check_startup(cfg)
    resolve_auto_tokenizer(cfg)
    fingerprint = config_fingerprint(cfg)
    if not cfg.force:
        done = find_finished_run(Path(cfg.paths.runs_dir) / cfg.experiment_name, fingerprint)
        if done is not None:  # also the same directory: re-running a sweep skips its finished jobs
            log.info("skipping: an identical run already finished in %s (force=true re-runs it)", done)
            return read_metrics(done)
    check_run_dir(run_dir, fingerprint)
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
        write_summary(logger, metrics)
        write_metrics(run_dir, metrics)
        log.info("finished: %s", run_dir)
        return metrics
    except BaseException as e:
        write_metrics(run_dir, {**base, "status": "failed", "error": f"{type(e).__name__}: {e}"})
        raise
    finally:
        finish_wandb()

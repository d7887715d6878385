"""One training job (``genarena-train``): its run directory, ``metrics.json``, logger, skip-if-finished and resume.

A run directory holds ``config.yaml`` (resolved), ``checkpoints/``, ``samples/`` and ``metrics.json``
with ``status`` ``running`` -> ``finished``, ``failed`` (with the error) or ``interrupted`` (a signal; a
killed run's ``running`` becomes ``interrupted`` on the next look, :mod:`genarena.runs`). A job whose
resolved config already finished under the same experiment is skipped (``force=true`` re-runs it). Every
check that needs no work runs before the run directory is created; a job that fails before its first training
step leaves no directory behind, and a directory that recorded another config is never written into.

``resume`` says where a job starts (:func:`plan_resume`):

- ``auto`` (default): the newest interrupted run of the same config fingerprint under the experiment that
  has a checkpoint is continued from its newest checkpoint, in its own directory and W&B run; otherwise
  the job starts afresh. Re-running the command of a crashed, killed or preempted run therefore resumes it;
- ``never``: start afresh in a new directory;
- a run directory or a ``.ckpt``: continue from that checkpoint (a run directory's newest), in that run's
  directory when the config is the same, else in a new one.

In a distributed run the processes Lightning starts (ranks > 0) receive rank zero's decision through the
environment (:data:`HANDOFF_RUN_DIR`, :data:`HANDOFF_CKPT`); only rank zero writes ``config.yaml`` and
``metrics.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from genarena.checkpoints import checkpoint_step, load_file, newest_resume_checkpoint, resume_checkpoints
from genarena.config import RESUME_MODES, unique_suffix, validate
from genarena.errors import ConfigError
from genarena.generators import tokenizer_for
from genarena.generators.cells import apply_match_params, resolve_head
from genarena.lit.loggers import build_logger, find_wandb_run_id, finish_wandb, wandb_run_id, write_summary
from genarena.lit.resume import TrainingState
from genarena.lit.wandb_results import log_checkpoints
from genarena.runs import (
    config_fingerprint,
    find_finished_run,
    find_resumable_runs,
    find_tokenizer_run,
    heartbeat,
    process_record,
    read_metrics,
    refresh_status,
    write_metrics,
)
from genarena.training.tasks import TASK_FUNCTIONS
from genarena.training.trainer import check_strategy, trainer_arguments, training_started

log = logging.getLogger("genarena")

HANDOFF_RUN_DIR = "GENARENA_JOB_RUN_DIR"  # rank zero's run directory, for the ranks Lightning launches
HANDOFF_CKPT = "GENARENA_JOB_RESUME_CKPT"  # rank zero's resume checkpoint ("" when starting afresh)
SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class RunInterrupted(SystemExit):
    """A run stopped by a signal after recording ``status: interrupted`` (and, after SIGTERM, a checkpoint):
    the process exits with this status and no traceback; re-running the same command resumes it."""


def current_run_dir(cfg: DictConfig) -> Path:
    """The Hydra output directory inside a Hydra app, else ``<runs_dir>/<experiment>/<time>``."""
    from hydra.core.hydra_config import HydraConfig  # lazy: only needed to ask a running Hydra app

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        return Path(cfg.paths.runs_dir) / cfg.experiment_name / f"{stamp}_{unique_suffix()}"


def seed_given() -> bool:
    """Whether the job's Hydra overrides set ``seed`` (a study of several seeds does: ``seed=0,1,2``); then the
    seed is part of the run's W&B name. False outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig  # lazy: only needed to ask a running Hydra app

    try:
        overrides = HydraConfig.get().overrides.task
    except ValueError:
        return False
    return any(o.split("=", 1)[0].lstrip("+~") == "seed" for o in overrides)


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


# ------------------------------------------------------------------------------------------ resume
@dataclass
class ResumePlan:
    """Where a job runs and the checkpoint it continues from (None: from the start)."""

    run_dir: Path
    ckpt: Path | None = None
    previous: dict[str, Any] | None = None  # the resumed run's metrics.json


def check_resume_value(value: Any) -> None:
    """``resume`` is ``auto``, ``never``, or an existing run directory / checkpoint file."""
    if value in RESUME_MODES:
        return
    if not isinstance(value, str) or not Path(value).expanduser().exists():
        raise ConfigError(f"resume={value!r} is not accepted; choose {', '.join(RESUME_MODES)}, a run directory or a "
                          ".ckpt file (that one does not exist)")


def run_of_checkpoint(ckpt: Path) -> Path | None:
    """The run directory a checkpoint file belongs to (``<run>/checkpoints/*.ckpt``, ``<run>/hpc_ckpt_*.ckpt``)."""
    for run in (ckpt.parent.parent, ckpt.parent):
        if (run / "metrics.json").is_file():
            return run
    return None


def plan_explicit(value: str, fresh: Path, fingerprint: str) -> ResumePlan:
    """``resume=<run dir or ckpt>``: that checkpoint, in its run's directory when the config is the same."""
    path = Path(value).expanduser()
    if path.is_dir():
        ckpt = newest_resume_checkpoint(path)
        if ckpt is None:
            raise ConfigError(f"resume={value}: that run directory has no checkpoint to resume from "
                              "(checkpoints/step*.ckpt or checkpoints/last.ckpt)")
        run = path
    else:
        if checkpoint_step(path) < 0:
            raise ConfigError(f"resume={value}: not a readable training checkpoint")
        ckpt, run = path, run_of_checkpoint(path)
    if run is None:
        return ResumePlan(fresh, ckpt)
    previous = refresh_status(run, read_metrics(run))
    if previous.get("status") == "running":
        raise ConfigError(f"resume={value}: that run is still running (pid {previous.get('pid')} on "
                          f"{previous.get('host')}); stop it first")
    if previous.get("config_fingerprint") != fingerprint:
        log.info("resume=%s: its run had another config; continuing from %s in a new directory", value, ckpt.name)
        return ResumePlan(fresh, ckpt)
    return ResumePlan(run, ckpt, previous)


def plan_resume(cfg: DictConfig, fresh: Path, fingerprint: str) -> ResumePlan:
    """Rank zero's decision where the job runs and what it continues from (see the module docstring)."""
    mode = cfg.resume
    check_resume_value(mode)
    if mode not in RESUME_MODES:
        return plan_explicit(mode, fresh, fingerprint)
    own = refresh_status(fresh, read_metrics(fresh))
    if own.get("status") == "running":
        raise ConfigError(f"{fresh} is in use by a running job (pid {own.get('pid')} on {own.get('host')}, "
                          "same config); wait for it, or start another with resume=never")
    if mode == "never":
        return ResumePlan(fresh)
    for run in find_resumable_runs(Path(cfg.paths.runs_dir) / cfg.experiment_name, fingerprint):
        ckpt = newest_resume_checkpoint(run.dir)
        if ckpt is not None:
            return ResumePlan(run.dir, ckpt, run.metrics)
        log.info("%s was interrupted before its first checkpoint: starting afresh", run.dir)
    return ResumePlan(fresh)


def plan_other_rank(cfg: DictConfig, fresh: Path, fingerprint: str) -> ResumePlan:
    """The plan of a rank > 0: rank zero's (from the environment, when Lightning launched this process), else
    the newest checkpoint of its own run directory (processes started together, e.g. the SLURM tasks of a
    sweep job, share that deterministic directory); it writes nothing."""
    if HANDOFF_RUN_DIR in os.environ:
        ckpt = os.environ.get(HANDOFF_CKPT) or None
        return ResumePlan(Path(os.environ[HANDOFF_RUN_DIR]), Path(ckpt) if ckpt else None)
    if cfg.resume not in RESUME_MODES:
        return plan_explicit(cfg.resume, fresh, fingerprint)
    if cfg.resume == "never" or read_metrics(fresh).get("status") == "finished":
        return ResumePlan(fresh)
    return ResumePlan(fresh, newest_resume_checkpoint(fresh))


def adopt_run_dir(fresh: Path, target: Path) -> None:
    """Continue logging in ``target`` instead of Hydra's new directory ``fresh``: the log lines so far are appended
    to ``target``'s log files, the file handlers point there, and ``fresh`` goes when it holds nothing else."""
    if fresh == target or not fresh.is_dir():
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == fresh:
            name = Path(handler.baseFilename).name
            handler.acquire()
            try:
                handler.close()
                with open(target / name, "a") as dst, open(fresh / name) as src:
                    dst.write(src.read())
                handler.baseFilename, handler.mode = str(target / name), "a"
                handler.stream = handler._open()
            finally:
                handler.release()
    leftovers = [p for p in fresh.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not leftovers:
        shutil.rmtree(fresh, ignore_errors=True)


def clear_stale_checkpoints(run_dir: Path) -> None:
    """A job starting from step 0 in a directory that holds checkpoints of an earlier attempt removes them, so
    a later resume can never pick one of those."""
    stale = resume_checkpoints(run_dir) + [p for p in [run_dir / "checkpoints" / "best.ckpt"] if p.is_file()]
    for path in stale:
        path.unlink()
    if stale:
        log.info("removed %d checkpoint(s) of an earlier attempt in %s", len(stale), run_dir)


@contextmanager
def handoff(run_dir: Path, ckpt: Path | None) -> Iterator[None]:
    """Rank zero's plan in the environment while the job runs (the processes Lightning launches inherit it)."""
    os.environ[HANDOFF_RUN_DIR], os.environ[HANDOFF_CKPT] = str(run_dir), str(ckpt or "")
    try:
        yield
    finally:
        os.environ.pop(HANDOFF_RUN_DIR, None)
        os.environ.pop(HANDOFF_CKPT, None)


def submitit_signal() -> signal.Signals | None:
    """The signal submitit sends a SLURM job before its time limit or at preemption (``SUBMITIT_PREEMPT_SIGNAL``,
    USR2 by default), when this process is a submitit job whose handler for it is installed; else None."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    return sig if sig is not None and callable(signal.getsignal(sig)) else None


@contextmanager
def checkpoint_before_requeue() -> Iterator[None]:
    """Under submitit, its preemption / time-out signal first stops training like a SIGTERM (a checkpoint at the
    next batch boundary, status ``interrupted``), then reaches submitit, which requeues the job and exits; the
    requeued job resumes from that checkpoint. Outside training the signal goes to submitit at once."""
    sig = submitit_signal()
    if sig is None:
        yield
        return
    requeue = signal.getsignal(sig)
    pending: list[int] = []

    def stop_first(signum: int, frame: Any) -> None:
        if TrainingState.fitting is None:
            requeue(signum, frame)
            return
        log.info("signal %s: writing a checkpoint before submitit requeues the job", signal.Signals(signum).name)
        pending.append(signum)
        signal.raise_signal(signal.SIGTERM)  # Lightning stops at the next batch boundary; PeriodicCheckpoint saves

    signal.signal(sig, stop_first)
    try:
        yield
    finally:
        signal.signal(sig, requeue)
        if pending:
            requeue(pending[0], None)


def interruption(e: BaseException) -> str | None:
    """Why a run stopped when it was a signal (SIGTERM, Ctrl-C, a scheduler's exit), else None."""
    if isinstance(e, SIGTERMException):
        return "SIGTERM"
    if isinstance(e, KeyboardInterrupt):
        return "KeyboardInterrupt"
    if isinstance(e, SystemExit):
        return f"exit {e.code}"
    return None


def record_stop(run_dir: Path, record: dict[str, Any], e: BaseException) -> None:
    """``metrics.json`` of a run that stopped on ``e``: ``interrupted`` by a signal (with the checkpoint that
    re-running the command resumes from), else ``failed`` with the error."""
    reason = interruption(e)
    if reason is None:
        write_metrics(run_dir, {**record, "status": "failed", "error": f"{type(e).__name__}: {e}"})
        return
    resume_point = newest_resume_checkpoint(run_dir)
    write_metrics(run_dir, {**record, "status": "interrupted", "interrupted_reason": reason,
                            "resume_point": str(resume_point) if resume_point else None})
    log.warning("interrupted (%s); %s", reason, f"re-run the same command to resume from {resume_point}"
                if resume_point else "no checkpoint yet: re-running the same command starts afresh")


# ------------------------------------------------------------------------------------------ the job
def start_run(cfg: DictConfig, fresh: Path, fingerprint: str, rank_zero: bool, hydra_dir: bool) -> ResumePlan:
    """Decide where the job runs and what it continues from, and make that directory ready: Hydra's new directory
    ``fresh`` gives way to a resumed run's; a job starting from step 0 clears checkpoints of an earlier attempt."""
    plan = plan_resume(cfg, fresh, fingerprint) if rank_zero else plan_other_rank(cfg, fresh, fingerprint)
    if hydra_dir:
        adopt_run_dir(fresh, plan.run_dir)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if plan.ckpt is not None:
        log.info("resuming %s from %s (step %d)", plan.run_dir, plan.ckpt, checkpoint_step(plan.ckpt))
    elif rank_zero:
        clear_stale_checkpoints(plan.run_dir)
    return plan


def run_training(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Run one job of ``cfg.task`` in ``run_dir`` (default: Hydra's output directory, or a new timestamped
    one) or, with ``resume``, in the run it continues; returns its ``metrics.json`` content. Skips a job that
    already finished with an identical config. A job that stops before its first training step (a bad value, a
    bad checkpoint, a skip) leaves no directory behind."""
    fresh = Path(run_dir) if run_dir is not None else current_run_dir(cfg)
    disposable = is_disposable(fresh)
    try:
        metrics = _run_job(cfg, fresh, hydra_dir=run_dir is None)
    except BaseException:
        if disposable and not training_started(fresh):
            discard_run_dir(fresh, cfg.paths.runs_dir)
        raise
    if disposable and not (fresh / "metrics.json").is_file():  # skipped, or continued in the run it resumed
        discard_run_dir(fresh, cfg.paths.runs_dir)
    return metrics


def _run_job(cfg: DictConfig, fresh: Path, hydra_dir: bool) -> dict[str, Any]:
    if cfg.task == "generator":
        resolve_head(cfg)  # generator=<order> generator.head=<head>: the paradigm of that cell
    check_startup(cfg)
    check_strategy(cfg.trainer)
    check_resume_value(cfg.resume)
    resolve_auto_tokenizer(cfg)
    if cfg.task == "generator":
        apply_match_params(cfg)  # match_params=N: the width with about N non-embedding parameters (config.yaml has it)
    fingerprint = config_fingerprint(cfg)
    if not cfg.force:
        done = find_finished_run(Path(cfg.paths.runs_dir) / cfg.experiment_name, fingerprint)
        if done is not None:  # also the same directory: re-running a sweep skips its finished jobs
            log.info("skipping: an identical run already finished in %s (force=true re-runs it)", done)
            return read_metrics(done)
    check_run_dir(fresh, fingerprint)
    rank_zero = rank_zero_only.rank == 0
    plan = start_run(cfg, fresh, fingerprint, rank_zero, hydra_dir=hydra_dir)
    run_dir, previous = plan.run_dir, plan.previous or {}
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    same_run = bool(previous) and plan.ckpt is not None  # continuing in the interrupted run's own directory
    logger = build_logger(cfg, run_dir,
                          resume_id=(previous.get("wandb_run_id") or find_wandb_run_id(run_dir)) if same_run else None,
                          resume_step=checkpoint_step(plan.ckpt) if same_run else None, seed_in_name=seed_given())
    base = {"task": cfg.task, "experiment_name": cfg.experiment_name, "sweep": cfg.sweep_name,
            "config_fingerprint": fingerprint, "data": cfg.data.name, "seed": cfg.seed, "run_dir": str(run_dir),
            "sessions": int(previous.get("sessions", 1)) + 1 if previous else 1,
            "resumed_from": str(plan.ckpt) if plan.ckpt is not None else None,
            "wandb_run_id": wandb_run_id(logger)}
    record = process_record()
    if rank_zero:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        write_metrics(run_dir, {**base, **record, "status": "running"})
    try:
        with checkpoint_before_requeue():
            metrics = {**base, **run_task(cfg, run_dir, logger, plan.ckpt, {**base, **record} if rank_zero else None),
                       "status": "finished"}
        write_summary(logger, metrics)
        if rank_zero:
            if cfg.logger.log_model:
                log_checkpoints(logger, run_dir, metrics)
            write_metrics(run_dir, metrics)
        log.info("finished: %s", run_dir)
        return metrics
    finally:
        finish_wandb()


def run_task(cfg: DictConfig, run_dir: Path, logger, ckpt: Path | None,
             record: dict[str, Any] | None) -> dict[str, Any]:
    """``cfg.task``'s function, with the plan in the environment and a heartbeat in ``metrics.json`` (on rank zero,
    which passes its ``record``); a stop is recorded (:func:`record_stop`) and a SIGTERM ends the process with
    :class:`RunInterrupted`."""
    try:
        with handoff(run_dir, ckpt) if record else nullcontext(), heartbeat(run_dir) if record else nullcontext():
            return TASK_FUNCTIONS[cfg.task](cfg, run_dir, logger, str(ckpt) if ckpt is not None else None)
    except BaseException as e:
        if record is not None:
            record_stop(run_dir, record, e)
        if isinstance(e, SIGTERMException):
            raise RunInterrupted(SIGTERM_EXIT_STATUS) from None
        raise

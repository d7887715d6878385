"""Experiment loggers: W&B (online, or offline when there is no key or no network), CSV, or none.

A logger never crashes a run: when W&B cannot start at all, the run goes on with a CSV logger and
one warning line.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from genarena.lit.wandb_logging import GenarenaWandbLogger, record_run, run_group, run_name, run_tags

log = logging.getLogger(__name__)


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_server_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((_wandb_host(), 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(requested: str) -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else ``online`` with a key and a reachable server, else ``offline``.
    ``online`` with an unreachable server -> ``offline`` (one log line) instead of waiting for wandb's retries."""
    if requested == "online" and not wandb_server_reachable():
        log.warning("W&B: logger.mode=online but %s is unreachable: logging offline (sync later with `wandb sync`)",
                    _wandb_host())
        return "offline"
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if not wandb_has_api_key():
        log.info("W&B: no API key configured, logging offline (sync later with `wandb sync`)")
        return "offline"
    if not wandb_server_reachable():
        log.info("W&B: %s unreachable, logging offline (sync later with `wandb sync`)", _wandb_host())
        return "offline"
    return "online"


class ResumedCSVLogger(CSVLogger):
    """Lightning's CSV logger for a resumed run: ``metrics.csv`` keeps the earlier sessions' rows up to the step the
    run resumes from (Lightning's own would delete the file), and the new session's rows follow."""

    def __init__(self, save_dir: str, keep_until_step: int) -> None:
        super().__init__(save_dir=save_dir, name="csv", version="")
        self._kept: tuple[list[str], list[dict[str, str]]] | None = None
        path = Path(self.log_dir) / "metrics.csv"
        if path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if not r.get("step") or int(float(r["step"])) <= keep_until_step]
                self._kept = (list(reader.fieldnames or []), rows)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None:
            writer = CSVLogger.experiment.fget(self)  # Lightning's writer (it removes the old file)
            if self._kept is not None:
                keys, rows = self._kept
                with open(writer.metrics_file_path, "w", newline="") as f:
                    out = csv.DictWriter(f, fieldnames=keys)
                    out.writeheader()
                    out.writerows(rows)
                writer.metrics_keys = list(keys)
        return self._experiment


def _csv(run_dir: Path, resume_step: int | None = None) -> CSVLogger:
    if resume_step is not None:
        return ResumedCSVLogger(str(run_dir), resume_step)
    return CSVLogger(save_dir=str(run_dir), name="csv", version="")


def build_logger(cfg: DictConfig, run_dir: Path, name: str | None = None, resume_id: str | None = None,
                 resume_step: int | None = None, seed_in_name: bool = False) -> Logger | bool:
    """The logger selected by ``cfg.logger``; returns False for ``none``. A W&B run gets genarena's identity
    (:func:`wandb_run_kwargs`) and chart axes (:class:`~genarena.lit.wandb_logging.GenarenaWandbLogger`). A run
    resumed in its own directory continues its curves: ``resume_id`` is its W&B run (resumed by id),
    ``resume_step`` the step whose earlier CSV rows ``csv/metrics.csv`` keeps."""
    lcfg = cfg.logger
    if lcfg.name == "none":
        return False
    if lcfg.name == "csv":
        return _csv(run_dir, resume_step)
    mode = resolve_wandb_mode(lcfg.mode)
    kwargs = wandb_run_kwargs(cfg, run_dir, name or run_name(cfg, with_seed=seed_in_name))
    if resume_id:
        kwargs.update(id=resume_id, resume="allow")
        log.info("W&B: resuming run %s", resume_id)
    for attempt in ([mode, "offline"] if mode == "online" else [mode]):
        try:
            logger = GenarenaWandbLogger(mode=attempt, **kwargs)
            _ = logger.experiment  # start the run now, so failures surface here and not mid-training
            return logger
        except Exception as e:  # network errors, auth errors, a broken wandb install...
            log.warning("W&B could not start in %s mode (%s: %s)", attempt, type(e).__name__, e)
    log.warning("W&B unavailable: logging to CSV in %s instead", run_dir / "csv")
    return _csv(run_dir, resume_step)


def wandb_run_id(logger: Logger | bool) -> str | None:
    """The id of a W&B logger's run (what a resumed run continues), on the process that logs; else None."""
    if isinstance(logger, WandbLogger) and isinstance(getattr(logger.experiment, "id", None), str):
        return logger.experiment.id
    return None


def wandb_run_kwargs(cfg: DictConfig, run_dir: Path, name: str) -> dict[str, Any]:
    """``wandb.init`` arguments of a training run: project, entity, the study's group, the readable ``name``,
    tags, job type (the task), the resolved config, W&B files under ``run_dir``."""
    lcfg = cfg.logger
    return dict(project=lcfg.project, entity=lcfg.entity, group=run_group(cfg), name=name, tags=run_tags(cfg),
                job_type=lcfg.job_type or cfg.task, save_dir=str(run_dir),
                config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), **init_settings(lcfg))


def init_settings(lcfg: Any) -> dict[str, Any]:
    """``settings=`` bounding how long ``wandb.init`` may take (``logger.init_timeout``): a bad key or a slow server
    then fails after that, and the run falls back to offline, instead of wandb's ~100 s of retries."""
    timeout = lcfg.get("init_timeout") if lcfg is not None else None
    if not timeout:
        return {}
    import wandb  # lazy: only runs that log to W&B need it (and it takes a second to import)

    return {"settings": wandb.Settings(init_timeout=float(timeout))}


def start_wandb_run(requested_mode: str, what: str, **init: Any) -> Any | None:
    """``wandb.init(**init)`` in the mode ``requested_mode`` resolves to (online falls back to offline); None
    when the mode is ``disabled`` or W&B cannot start (one warning per failed attempt, naming ``what``)."""
    mode = resolve_wandb_mode(requested_mode)
    if mode == "disabled":
        return None
    try:
        import wandb  # lazy: only runs that log to W&B need it (and it takes a second to import)
    except ImportError as e:
        log.warning("could not start %s: %s", what, e)
        return None
    for attempt in ([mode, "offline"] if mode == "online" else [mode]):
        try:
            return wandb.init(mode=attempt, **init)
        except Exception as e:  # network errors, auth errors, a corrupt run directory...
            log.warning("could not start %s in %s mode (%s: %s)", what, attempt, type(e).__name__, e)
    return None


def write_summary(logger: Logger | bool, metrics: dict) -> None:
    """The run's flat scalars into its W&B summary (what ``genarena-scaling --source wandb`` reads)."""
    for lg in ([logger] if logger else []):
        if isinstance(lg, WandbLogger):
            try:
                lg.experiment.summary.update({k: v for k, v in metrics.items()
                                              if isinstance(v, (int, float, str, bool))})
            except Exception as e:  # logging must never fail a run
                log.warning("could not write the W&B summary: %s", e)


def finish_wandb() -> None:
    """Record and close the current W&B run (between jobs of a multirun, which share one process)."""
    try:
        import wandb  # lazy: only runs that logged to W&B need it

        if wandb.run is not None:
            record_run(wandb.run)
            wandb.finish()
    except Exception as e:  # never let logging teardown fail a run
        log.warning("wandb.finish() failed: %s", e)


def find_wandb_run_id(run_dir: Path) -> str | None:
    """The id of the newest W&B run under ``<run_dir>/wandb/`` (``[offline-]run-<date>_<time>-<id>``)."""
    pattern = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)$")
    root = run_dir / "wandb"
    found = sorted((m.group(1), m.group(2)) for d in (root.iterdir() if root.is_dir() else [])
                   if d.is_dir() and (m := pattern.match(d.name)))
    return found[-1][1] if found else None

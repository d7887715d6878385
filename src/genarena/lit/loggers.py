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
                 resume_step: int | None = None) -> Logger | bool:
    """The logger selected by ``cfg.logger``; returns False for ``none``. A run resumed in its own directory
    continues its curves: ``resume_id`` is its W&B run (resumed by id), ``resume_step`` the step whose earlier
    CSV rows ``csv/metrics.csv`` keeps."""
    lcfg = cfg.logger
    if lcfg.name == "none":
        return False
    if lcfg.name == "csv":
        return _csv(run_dir, resume_step)
    mode = resolve_wandb_mode(lcfg.mode)
    tags = list(lcfg.tags) + [t for t in (cfg.get("task"), cfg.get("sweep_name")) if t]
    if cfg.task == "generator":
        tags.append(cfg.generator.name)
    kwargs = dict(project=lcfg.project, entity=lcfg.entity, group=lcfg.group, tags=sorted(set(tags)),
                  job_type=lcfg.job_type, save_dir=str(run_dir), name=name or run_dir.name,
                  config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    if resume_id:
        kwargs.update(id=resume_id, resume="allow")
        log.info("W&B: resuming run %s", resume_id)
    if lcfg.get("init_timeout"):  # a bad key or a slow server fails after this, not after wandb's ~100 s of retries
        import wandb  # lazy: only runs that log to W&B need it (and it takes a second to import)

        kwargs["settings"] = wandb.Settings(init_timeout=float(lcfg.init_timeout))
    for attempt in ([mode, "offline"] if mode == "online" else [mode]):
        try:
            logger = WandbLogger(mode=attempt, **kwargs)
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
    """Close the current W&B run (between jobs of a multirun, which share one process)."""
    try:
        import wandb  # lazy: only runs that logged to W&B need it

        if wandb.run is not None:
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


def log_evaluation_to_wandb(run_dir: Path, scalars: dict[str, Any]) -> bool:
    """Log ``scalars`` (as ``eval/<key>`` and summary) to the run's W&B run, resumed by id; offline when there
    is no key or network. Never raises: a failure is one warning line. Returns whether it logged."""
    run_id = find_wandb_run_id(run_dir)
    if run_id is None:
        return False
    try:
        import wandb  # lazy: only runs that logged to W&B need it (and it takes a second to import)

        run_cfg = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else OmegaConf.create()
        lcfg = run_cfg.get("logger") or {}
        mode = resolve_wandb_mode(lcfg.get("mode") or "auto")
        if mode == "disabled":
            return False
        timeout = lcfg.get("init_timeout")
        run = wandb.init(id=run_id, resume="allow", project=lcfg.get("project") or "genarena",
                         entity=lcfg.get("entity"), dir=str(run_dir), mode=mode,
                         settings=wandb.Settings(init_timeout=float(timeout)) if timeout else None)
        numbers = {k: v for k, v in scalars.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        run.log({f"eval/{k}": v for k, v in numbers.items()})
        run.summary.update({k: v for k, v in scalars.items() if isinstance(v, (int, float, str))})
        run.finish()
        return True
    except Exception as e:  # no wandb, no network, a corrupt run directory...
        log.warning("could not log the evaluation to W&B run %s (%s: %s)", run_id, type(e).__name__, e)
        return False

"""Results logged to W&B after training: an evaluation into the run it evaluates, a study's tables and
figures (genarena-compare's report, genarena-scaling's fits) as a run of the study's group, and a run's
checkpoints as a model artifact.

An evaluation continues the evaluated run (resumed by id, with its group, name, tags and job type) on its
axes: one history row at the run's next step, at its final ``trainer/global_step`` and
``flops_train_total``, holding the results as ``eval/<metric>`` and a sample grid as
``images/eval_samples``; everything else it measured (N, seed, extractor, sampling options, ...) goes to the
summary only, as do the results under their ``metrics.json`` names (``fid``, ``class_acc``, ...). No
function here raises: W&B failing is one warning line, and the caller goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import OmegaConf

from genarena.lit.loggers import find_wandb_run_id, init_settings, start_wandb_run
from genarena.lit.wandb_logging import (
    COMPUTE_METRIC,
    EVAL_RESULTS,
    STEP_METRIC,
    define_metrics,
    read_run_record,
    record_run,
)

log = logging.getLogger(__name__)

Table = tuple[Sequence[str], Sequence[Sequence[Any]]]  # (columns, rows)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def evaluation_row(scalars: Mapping[str, Any], run_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The history row of one evaluation: ``eval/<result>`` for :data:`EVAL_RESULTS`, on the run's final
    ``trainer/global_step`` and ``flops_train_total`` (from its ``metrics.json``)."""
    row: dict[str, Any] = {f"eval/{k}": scalars[k] for k in EVAL_RESULTS if _number(scalars.get(k))}
    for axis, key in ((STEP_METRIC, "steps"), (COMPUTE_METRIC, "flops_train_total")):
        if _number(run_metrics.get(key)):
            row[axis] = run_metrics[key]
    return row


def summary_values(scalars: Mapping[str, Any]) -> dict[str, Any]:
    """The scalars (numbers, strings, booleans) of a result, for a run's summary."""
    return {k: v for k, v in scalars.items() if isinstance(v, (str, bool)) or _number(v)}


def _image(image: Path | np.ndarray | Any, caption: str | None = None) -> Any:
    """``wandb.Image`` of a file or of a uint8 array / tensor ``(C, H, W)``, ``(H, W, C)`` or ``(H, W)``."""
    import wandb  # lazy: only W&B logging needs it (a second to import)

    if isinstance(image, (str, Path)):
        return wandb.Image(str(image), caption=caption)
    arr = np.asarray(image.cpu() if hasattr(image, "cpu") else image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return wandb.Image(arr, caption=caption)


def log_evaluation(run_dir: str | Path, scalars: Mapping[str, Any], run_metrics: Mapping[str, Any],
                   image: Path | np.ndarray | Any | None = None) -> bool:
    """Log an evaluation of the run in ``run_dir`` into its W&B run (see the module doc); ``run_metrics`` is the
    run's ``metrics.json`` (its final step and compute), ``image`` a sample grid. Returns whether it logged
    (False, silently, when the run has no W&B run)."""
    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    run_id = record.get("id") or find_wandb_run_id(run_dir)
    if run_id is None:
        return False
    config_file = run_dir / "config.yaml"
    run_cfg = OmegaConf.load(config_file) if config_file.is_file() else OmegaConf.create()
    lcfg = run_cfg.get("logger") or {}
    identity = {"project": record.get("project") or lcfg.get("project") or "genarena",
                "entity": record.get("entity") or lcfg.get("entity"),
                **{k: record[k] for k in ("group", "name", "job_type", "tags") if record.get(k)}}
    run = start_wandb_run(lcfg.get("mode") or "auto", f"W&B run {run_id}", id=run_id, resume="allow",
                          dir=str(run_dir), **identity, **init_settings(lcfg))
    if run is None:
        return False
    try:
        define_metrics(run)
        row = evaluation_row(scalars, run_metrics)
        if image is not None:
            row["images/eval_samples"] = _image(image, f"{scalars.get('eval_n', '?')} samples, seed "
                                                      f"{scalars.get('eval_seed', '?')}")
        run.log(row, step=max(int(run.step), int(record.get("next_step", 0))), commit=True)
        run.summary.update(summary_values(scalars))
        record_run(run)
        return True
    except Exception as e:  # logging must never fail an evaluation
        log.warning("could not log the evaluation to W&B run %s (%s: %s)", run_id, type(e).__name__, e)
        return False
    finally:
        _finish(run)


def log_study(requested_mode: str, *, project: str, entity: str | None, group: str | None, name: str,
              job_type: str, tags: Sequence[str], config: Mapping[str, Any], directory: str | Path,
              tables: Mapping[str, Table] | None = None, images: Mapping[str, Path] | None = None,
              summary: Mapping[str, Any] | None = None) -> str | None:
    """A run of a study's group holding its ``tables`` (``wandb.Table`` each) and figures ``images`` (files),
    in one history row, and ``summary``; W&B files under ``directory``. Returns the run's id (None when W&B is
    off or failed)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    run = start_wandb_run(requested_mode, f"the W&B run {name!r}", project=project, entity=entity, group=group,
                          name=name, job_type=job_type, tags=list(tags), config=dict(config), dir=str(directory))
    if run is None:
        return None
    try:
        import wandb  # lazy: only W&B logging needs it (a second to import)

        row = {key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])
               for key, (columns, rows) in (tables or {}).items()}
        row.update({key: _image(path) for key, path in (images or {}).items()})
        run.log(row)
        run.summary.update(summary_values(summary or {}))
        return run.id
    except Exception as e:
        log.warning("could not log %r to W&B (%s: %s)", name, type(e).__name__, e)
        return None
    finally:
        _finish(run)


def log_checkpoints(logger: Logger | bool, run_dir: str | Path, metrics: Mapping[str, Any]) -> bool:
    """``logger.log_model=true``: the run's checkpoints (``last.ckpt``, ``best.ckpt``) and ``config.yaml`` as the
    W&B artifact ``model-<run id>`` (type ``model``, aliases ``latest`` and ``step<N>``, the run's scalars as
    metadata). Returns whether it logged."""
    if not isinstance(logger, WandbLogger):
        return False
    run_dir = Path(run_dir)
    files = [p for p in (run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "best.ckpt",
                         run_dir / "config.yaml") if p.is_file()]
    try:
        import wandb  # lazy: only W&B logging needs it (a second to import)

        run = logger.experiment
        artifact = wandb.Artifact(f"model-{run.id}", type="model", metadata=summary_values(metrics))
        for path in files:
            artifact.add_file(str(path), name=path.name)
        aliases = ["latest"] + ([f"step{metrics['steps']}"] if _number(metrics.get("steps")) else [])
        run.log_artifact(artifact, aliases=aliases)
        return True
    except Exception as e:
        log.warning("could not log the checkpoints to W&B (%s: %s)", type(e).__name__, e)
        return False


def _finish(run: Any) -> None:
    try:
        run.finish()
    except Exception as e:  # never let logging teardown fail the caller
        log.warning("wandb finish failed: %s", e)

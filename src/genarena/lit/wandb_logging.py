"""What a genarena run looks like in W&B: its identity (group, name, tags, job type), its chart axes, and
Lightning's W&B logger on those axes.

- Group: one per study: a sweep's name (``sweep_name``; genarena-compare's jobs run as the sweep
  ``compare-<name>``), else the run's experiment name (``logger.group`` overrides it).
- Name: what was trained, readable: ``var-d4`` (paradigm and depth), ``msvq`` (a tokenizer), ``classifier``;
  ``logger.run_name`` replaces it; ``-s<seed>`` is appended when the seed was set on the command line (a study
  of several seeds sets ``seed=0,1,2``, so each of its runs carries its seed).
- Tags: the task, the data, and for a generator its paradigm, tokenizer kind and size ``d<depth>``; a
  tokenizer's name; the sweep's name; ``logger.tags``. ``job_type`` is the task.
- Axes: training curves (``train/*``, ``val/*``, ``images/*``, ``lr-*``, periodic ``eval/*``) are charted
  against ``trainer/global_step``, the number of optimizer steps done, i.e. the weights a point was measured
  with. A generator run also logs ``flops_train_total`` (training FLOPs so far) in every row; it is the x of
  the evaluation metrics (``eval/fid``, ...), so a group's FID charts read against training compute. A run's
  constants (``params``, the final ``fid``, ``sample_s_per_image``, ...) are summary values: W&B's scatter
  plots chart them across the runs of a group.

:class:`GenarenaWandbLogger` puts every point on ``trainer/global_step`` (Lightning logs validation one
step early and the final ``trainer.validate()`` one step later, for the same weights) and never logs a key
twice at one step, so the history's step is monotonic and the last point is not duplicated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from genarena.generators import tokenizer_for

log = logging.getLogger(__name__)

STEP_METRIC = "trainer/global_step"  # the x of training curves: optimizer steps done
COMPUTE_METRIC = "flops_train_total"  # training FLOPs so far (generator runs): the x of evaluation metrics
EVAL_RESULTS = ("fid", "isc_mean", "kid_mean", "precision", "recall", "class_acc", "sample_s_per_image")
RUN_RECORD = "genarena-run.json"  # <run dir>/wandb/: the W&B run's id, identity and next history step


def run_name(cfg: DictConfig, with_seed: bool = False) -> str:
    """``logger.run_name``, else ``<paradigm>-d<depth>`` (generator), ``<tokenizer>`` or the task; with
    ``-s<seed>`` when ``with_seed``."""
    base = cfg.logger.get("run_name")
    if not base:
        if cfg.task == "generator":
            base = f"{cfg.generator.name}-d{cfg.generator.depth}"
        elif cfg.task == "tokenizer":
            base = str(cfg.tokenizer.name)
        else:
            base = str(cfg.task)
    return f"{base}-s{cfg.seed}" if with_seed else str(base)


def run_tags(cfg: DictConfig) -> list[str]:
    """Task, data, paradigm / tokenizer kind / size ``d<depth>`` (generators), tokenizer (tokenizers), sweep,
    then ``logger.tags``; each once, in that order."""
    tags = [cfg.task, cfg.data.name]
    if cfg.task == "generator":
        tags += [cfg.generator.name, tokenizer_for(cfg.generator.name), f"d{cfg.generator.depth}"]
    elif cfg.task == "tokenizer":
        tags.append(cfg.tokenizer.name)
    if cfg.get("sweep_name"):
        tags.append(cfg.sweep_name)
    tags += list(cfg.logger.tags)
    return list(dict.fromkeys(str(t) for t in tags))


def run_group(cfg: DictConfig) -> str:
    """``logger.group``, else the sweep's name, else the experiment's."""
    return str(cfg.logger.get("group") or cfg.get("sweep_name") or cfg.experiment_name)


def define_metrics(run: Any) -> None:
    """The chart axes: everything against ``trainer/global_step``; the evaluation results against
    ``flops_train_total``, without an automatic summary (the run's summary holds them under their
    ``metrics.json`` names: ``fid``, ``class_acc``, ..., once)."""
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
    for key in EVAL_RESULTS:
        run.define_metric(f"eval/{key}", step_metric=COMPUTE_METRIC, summary="none")


class GenarenaWandbLogger(WandbLogger):
    """Lightning's W&B logger on genarena's axes (:func:`define_metrics`).

    Once it follows a trainer (:meth:`follow`, done by ``build_trainer``), every row is logged at
    ``trainer.global_step``, a key already logged at that step is dropped (the final ``validate()`` after
    ``fit`` repeats the last validation), and with ``flops_per_step`` every row carries ``flops_train_total``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)  # Lightning passes it; wandb 0.2x warns that it does nothing
        self.trainer: L.Trainer | None = None
        self.flops_per_step: float | None = None
        self._axes_defined = False
        self._step, self._logged_at_step = -1, set()

    def follow(self, trainer: L.Trainer, flops_per_step: float | None = None) -> None:
        """Log on ``trainer``'s step; ``flops_per_step`` (training FLOPs of one optimizer step) adds the compute
        axis."""
        self.trainer = trainer
        if flops_per_step is not None:
            self.flops_per_step = float(flops_per_step)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # a spawned process re-attaches to the run; it follows its own trainer
        state["trainer"] = None
        return state

    @property
    def experiment(self) -> Any:
        run = super().experiment
        if not self._axes_defined:
            self._axes_defined = True
            try:
                define_metrics(run)
            except Exception as e:  # logging must never fail a run
                log.warning("could not define the W&B chart axes: %s", e)
        return run

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.trainer is not None:
            step = self.trainer.global_step
        if step is not None:
            if step != self._step:
                self._step, self._logged_at_step = step, set()
            metrics = {k: v for k, v in metrics.items() if k not in self._logged_at_step}
            if not set(metrics) - {"epoch"}:
                return
            self._logged_at_step.update(metrics)
            if self.flops_per_step is not None:
                metrics[COMPUTE_METRIC] = step * self.flops_per_step
        super().log_metrics(metrics, step)


def follow_trainer(trainer: L.Trainer, flops_per_step: float | None = None) -> None:
    """Make the trainer's genarena W&B loggers log on its step (and ``flops_train_total`` when given)."""
    for lg in trainer.loggers:
        if isinstance(lg, GenarenaWandbLogger):
            lg.follow(trainer, flops_per_step)


# ---------------------------------------------------------------------------------------------- run record
def run_record_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "wandb" / RUN_RECORD


def record_run(run: Any) -> None:
    """Write the W&B run's id, identity and next history step (``run.step``) next to its files
    (``<dir>/wandb/genarena-run.json``), so that a later process (an evaluation) continues it on its axis:
    W&B knows an offline run's last step only in the files it wrote."""
    try:
        wandb_dir = Path(run.dir).parents[1]  # <dir>/wandb/<offline-run-...>/files
        record = {"id": run.id, "project": run.project, "entity": run.entity or None, "group": run.group or None,
                  "name": run.name, "job_type": run.job_type or None, "tags": list(run.tags or ()),
                  "next_step": int(run.step)}
        (wandb_dir / RUN_RECORD).write_text(json.dumps(record, indent=2))
    except Exception as e:  # a missing record only costs a later evaluation its place on the axis
        log.warning("could not record the W&B run: %s", e)


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """The record :func:`record_run` wrote for the W&B run in ``run_dir`` ({} when there is none)."""
    path = run_record_path(run_dir)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as e:
        log.warning("ignoring the unreadable %s: %s", path, e)
        return {}

"""A ``lightning.Trainer`` built from the config: ``trainer.*`` are its arguments, ``callbacks.*`` its callbacks.

Every ``trainer`` key except :data:`~genarena.config.GENARENA_TRAINER_KEYS` is passed to ``Trainer``;
a key added on the command line (``+trainer.accumulate_grad_batches=4``) must be one of its arguments,
anything else stops at start-up naming the key. Each ``callbacks.<name>`` node is instantiated from
its ``_target_`` (null or ``enabled: false`` leaves it out); relative ``dirpath`` / ``out_dir`` /
``log_path`` values are placed inside the run directory. Every trainer also gets
:class:`~genarena.lit.resume.TrainingState` (RNG state and training time across sessions: not an option).
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelSummary, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from genarena.config import GENARENA_TRAINER_KEYS, RESERVED_TRAINER_KEYS, to_dict
from genarena.errors import ConfigError
from genarena.lit.resume import PeriodicCheckpoint, TrainingState
from genarena.lit.wandb_logging import follow_trainer

log = logging.getLogger("genarena")

PATH_ARGUMENTS = ("dirpath", "out_dir", "log_path")  # callback arguments resolved inside the run directory

# Lightning messages that say nothing about a genarena run, each with why it is safe to drop:
# - tokenizers train with manual optimisation (tokenizer + optional discriminator), so a periodic checkpoint holds the
#   weights after the step: the state a resumed run continues from, which is what we want;
# - a generator's tokenizer is frozen and kept in eval mode on purpose (Lightning counts its modules);
# - Lightning's own pytree helper calls a torch API that newer torch deprecates;
# - the dataloaders are in-memory tensors: worker processes would only add start-up time;
# - a resumed run continues mid-epoch exactly: genarena's datamodules keep the data order and position in the
#   checkpoint (genarena.data.order), which Lightning's check for a resumable *dataloader* does not see;
# - a run resumed in its own directory finds its checkpoints there (a run starting afresh in an existing directory
#   removes them first, genarena.training.job), and its CSV logger keeps the earlier rows (ResumedCSVLogger);
# - advertisements for Lightning's hosted services;
# - notes that echo a setting genarena passes explicitly (limit_*_batches=1.0, the ModelSummary callback).
KNOWN_LIGHTNING_WARNINGS = (
    "Using ModelCheckpoint with manual optimization",
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The '\w+_dataloader' does not have many workers",
    "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
    r"Checkpoint directory .* exists and is not empty",
    r"Experiment logs directory .* exists and is not empty",
)
DROPPED_LOG_LINES = ("💡 Tip:", "`Trainer(limit_", "Trainer already configured with model summary callbacks")


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(DROPPED_LOG_LINES)


def quiet_lightning() -> None:
    """Drop the Lightning warnings and log lines listed above, and print each Lightning log line once
    (idempotent). Lightning gives its ``lightning`` logger a console handler of its own even when the root
    logger has one (Hydra's), which prints every line twice; with a root handler, Lightning's goes."""
    for message in KNOWN_LIGHTNING_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            lightning_logger.removeHandler(handler)
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropAdverts) for f in logger.filters):
            logger.addFilter(_DropAdverts())


def trainer_arguments(trainer_cfg: DictConfig) -> dict[str, Any]:
    """``cfg.trainer`` without genarena's own keys, checked against ``lightning.Trainer``'s signature."""
    accepted = set(inspect.signature(L.Trainer.__init__).parameters) - {"self"}
    args = {k: v for k, v in to_dict(trainer_cfg).items() if k not in GENARENA_TRAINER_KEYS}
    reserved = sorted(set(args) & set(RESERVED_TRAINER_KEYS))
    if reserved:
        raise ConfigError(f"trainer.{reserved[0]} is set by genarena (loggers: logger=..., callbacks: callbacks.*, "
                          "the run directory: paths.runs_dir); remove it from the trainer config")
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ConfigError(f"trainer.{unknown[0]} is not an argument of lightning.Trainer; accepted: "
                          f"{', '.join(sorted(accepted - set(RESERVED_TRAINER_KEYS)))}")
    return args


def _inside(run_dir: Path, value: Any) -> Any:
    if isinstance(value, str) and not Path(value).is_absolute():
        return str(run_dir / value)
    return value


def build_callbacks(cfg: DictConfig, run_dir: Path, has_logger: bool) -> list[Callback]:
    """The callbacks of ``cfg.callbacks`` in order, leaving out those that are null, disabled, or need what the
    run does not have (a logger for ``LearningRateMonitor``, ``trainer.enable_progress_bar`` for a progress bar,
    ``trainer.enable_model_summary`` for a summary)."""
    out: list[Callback] = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        spec = to_dict(node)
        if not spec.pop("enabled", True):
            continue
        for key in PATH_ARGUMENTS:
            if key in spec:
                spec[key] = _inside(run_dir, spec[key])
        try:
            callback = instantiate(OmegaConf.create(spec))
        except InstantiationException as e:
            raise ConfigError(f"callbacks.{name}: cannot build {spec.get('_target_')} ({e})") from None
        if not isinstance(callback, Callback):
            raise ConfigError(f"callbacks.{name}: {spec['_target_']} is not a Lightning callback")
        if ((isinstance(callback, LearningRateMonitor) and not has_logger)
                or (isinstance(callback, ProgressBar) and not cfg.trainer.enable_progress_bar)
                or (isinstance(callback, ModelSummary) and not cfg.trainer.enable_model_summary)):
            continue
        out.append(callback)
    # the periodic (resume) checkpoint is written last, so a save after a validation holds the state the other
    # callbacks (best checkpoint, early stopping) updated in that validation
    return sorted(out, key=lambda c: isinstance(c, PeriodicCheckpoint))  # stable: the rest keep their order


def check_strategy(trainer_cfg: DictConfig) -> None:
    """FSDP needs GPUs: Lightning's FSDPStrategy accepts only the CUDA accelerator; say so before Lightning does."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if strategy.startswith("fsdp") and trainer_cfg.get("accelerator") not in ("gpu", "cuda"):
        raise ConfigError(
            f"trainer.strategy={strategy} needs GPUs (Lightning's FSDPStrategy runs on the CUDA accelerator only), "
            f"but trainer.accelerator={trainer_cfg.get('accelerator')}; on CPUs use data parallelism: "
            "trainer=ddp trainer.accelerator=cpu trainer.devices=<processes>")


_STARTED_RUNS: set[str] = set()  # run directories whose training reached its first step (in this process)


class TrainingStarted(Callback):
    """Records that the first training batch reached the model in the trainer's run directory
    (:func:`training_started`): a job that fails before that leaves no run directory behind."""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        _STARTED_RUNS.add(str(Path(trainer.default_root_dir).resolve()))


def training_started(run_dir: Path) -> bool:
    """Whether a trainer of this process began training in ``run_dir``."""
    return str(Path(run_dir).resolve()) in _STARTED_RUNS


def build_trainer(cfg: DictConfig, run_dir: Path, logger: Logger | bool,
                  callbacks: list[Callback] | None = None) -> L.Trainer:
    """``lightning.Trainer(**cfg.trainer)`` with ``cfg.callbacks`` (or the given ``callbacks``), the logger and
    the run directory."""
    quiet_lightning()
    check_strategy(cfg.trainer)
    args = trainer_arguments(cfg.trainer)
    if callbacks is None:
        callbacks = build_callbacks(cfg, run_dir, has_logger=bool(logger))
    callbacks = [*callbacks, TrainingState()]
    try:
        trainer = L.Trainer(**args, logger=logger, callbacks=[*callbacks, TrainingStarted()],
                            default_root_dir=str(run_dir))
    except (ValueError, TypeError) as e:  # Lightning's MisconfigurationException is a ValueError
        raise ConfigError(f"trainer: {e}") from None
    follow_trainer(trainer)  # W&B points on trainer.global_step
    return trainer

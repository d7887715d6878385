"""The domain classifier of a dataset: training it (``task=classifier``) and the cached file evaluation uses.

:func:`ensure_classifier` is the provider :class:`~genarena.metrics.fidelity.Evaluator` receives: it
returns the cached classifier of ``cfg.data`` and trains it first (as ``genarena-train task=classifier``)
when the cache has none.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from genarena.config import compose, to_dict
from genarena.data import ImageDataModule
from genarena.errors import CheckpointError
from genarena.lit.classifier_module import ClassifierModule
from genarena.lit.resume import training_time_s
from genarena.metrics.classifier import check_accuracy, classifier_cache_path, load_classifier, save_classifier
from genarena.runs import write_metrics
from genarena.training.trainer import build_trainer

log = logging.getLogger("genarena")


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def final_scalars(results: list[dict[str, float]]) -> dict[str, float]:
    """``trainer.validate`` results as flat ``val_<name>`` scalars."""
    return {k.replace("/", "_"): float(v) for d in results for k, v in d.items()}


def train_classifier(cfg: DictConfig, run_dir: Path, logger, ckpt_path: str | None = None) -> dict[str, Any]:
    """Train the domain classifier of ``cfg.data`` and cache it (rank zero); returns the run's scalars."""
    dm = ImageDataModule(cfg.data, cfg.seed)
    dm.setup()
    c = cfg.classifier
    module = ClassifierModule(cfg.data.channels, dm.num_classes, c.ch, c.feature_dim, cfg.optim, cfg.trainer.max_steps)
    trainer = build_trainer(cfg, run_dir, logger)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=not cfg.allow_unsafe_load)
    wall = training_time_s(trainer)
    scalars = final_scalars(trainer.validate(module, datamodule=dm, verbose=False))
    trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    meta = {"channels": cfg.data.channels, "num_classes": dm.num_classes, "ch": c.ch, "feature_dim": c.feature_dim,
            "data": to_dict(cfg.data), "classifier": to_dict(c), "val_acc": scalars.get("val_acc"),
            "run_dir": str(run_dir)}
    cache = classifier_cache_path(cfg.paths.cache_dir, cfg.data, c)
    if trainer.is_global_zero:
        save_classifier(module.model.cpu(), cache, meta)
        log.info("domain classifier of %s (val acc %.4f) cached at %s", cfg.data.name, scalars.get("val_acc", 0), cache)
        if scalars.get("val_acc", 0) < c.min_val_acc:
            log.warning("its validation accuracy is below classifier.min_val_acc=%s: evaluations will refuse it (%s)",
                        c.min_val_acc, retrain_hint(cfg))
    return {"params": num_params(module.model), "train_time_s": wall, "steps": trainer.global_step,
            "classifier_cache": str(cache), **scalars}


def classifier_config(cfg: DictConfig) -> DictConfig:
    """The ``task=classifier`` config for ``cfg.data``: the classifier task's defaults with ``cfg``'s data,
    classifier, paths, seed and accelerator; one device, no logger."""
    out = compose("config", ["task=classifier", "logger=none"])
    data = to_dict(cfg.data)
    data["batch_size"] = int(cfg.classifier.batch_size)
    out.data = OmegaConf.create(data)
    out.classifier = cfg.classifier
    out.paths.runs_dir, out.paths.cache_dir = str(cfg.paths.runs_dir), str(cfg.paths.cache_dir)
    out.seed = cfg.seed
    if "trainer" in cfg:
        out.trainer.accelerator = cfg.trainer.accelerator
    return out


def retrain_hint(cfg: DictConfig) -> str:
    """How to train a better classifier for ``cfg.data`` (its cache key includes ``classifier.*``)."""
    steps = 2 * int(cfg.classifier.max_steps)
    return (f"train a better one, e.g. `genarena-train task=classifier data={cfg.data.name} "
            f"classifier.max_steps={steps}`, and evaluate with the same classifier.max_steps={steps}")


def ensure_classifier(cfg: DictConfig) -> Path:
    """The cached domain classifier of ``cfg.data`` trained with ``cfg.classifier``; trains it (as ``genarena-train
    task=classifier``) when missing. One whose validation accuracy is below ``classifier.min_val_acc`` is refused."""
    path = classifier_cache_path(cfg.paths.cache_dir, cfg.data, cfg.classifier)
    if path.is_file():
        check_accuracy(path, load_classifier(path)[1], cfg.classifier.min_val_acc, retrain_hint(cfg))
        return path
    ccfg = classifier_config(cfg)
    run_dir = Path(ccfg.paths.runs_dir) / ccfg.experiment_name / time.strftime("%Y-%m-%d_%H-%M-%S")
    log.info("no domain classifier for data=%s at %s: training one (%d steps) in %s", cfg.data.name, path,
             ccfg.trainer.max_steps, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(ccfg, resolve=True))
    L.seed_everything(ccfg.seed, workers=True, verbose=False)
    metrics = train_classifier(ccfg, run_dir, False)
    write_metrics(run_dir, {"task": "classifier", "experiment_name": ccfg.experiment_name, "data": cfg.data.name,
                            "seed": ccfg.seed, "run_dir": str(run_dir), **metrics, "status": "finished"})
    if not path.is_file():
        raise CheckpointError(f"training the domain classifier of data={cfg.data.name} did not write {path}")
    check_accuracy(path, load_classifier(path)[1], cfg.classifier.min_val_acc, retrain_hint(cfg))
    return path


def classifier_provider(cfg: DictConfig) -> Callable[[], Path]:
    """``ensure_classifier`` bound to ``cfg``: what an :class:`~genarena.metrics.fidelity.Evaluator` receives."""
    return lambda: ensure_classifier(cfg)

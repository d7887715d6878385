"""The training layer: plain functions that take a composed config and train something.

- :func:`run_training` (``genarena-train``): one job of ``cfg.task`` in its own run directory, with
  ``metrics.json``, skip-if-finished and the logger;
- :func:`train_tokenizer`, :func:`train_classifier`, :func:`train_generator`: the tasks themselves;
- :func:`build_trainer`: a ``lightning.Trainer`` from ``cfg.trainer`` and ``cfg.callbacks``;
- :func:`ensure_classifier`: the domain classifier of a dataset (trained and cached when missing), the
  provider evaluation receives.
"""

from genarena.training.classifier import classifier_provider, ensure_classifier
from genarena.training.job import run_training
from genarena.training.tasks import train_classifier, train_generator, train_tokenizer
from genarena.training.trainer import build_trainer

__all__ = ["build_trainer", "classifier_provider", "ensure_classifier", "run_training", "train_classifier",
           "train_generator", "train_tokenizer"]

"""genarena: compare image-generation paradigms (VAR, raster AR, MaskGIT, MAR) head to head and measure
how each one scales.

    import genarena
    run = genarena.load("runs/generator_var_mnist5k/<time>")    # a run directory or a generator .ckpt
    images = run.sample(64, seed=0)                             # uint8 (64, C, H, W)
    scores = genarena.evaluate(run)                             # FID, IS, KID, precision/recall, class acc

``genarena.compose(...)`` gives a config of ``conf/`` with Hydra overrides and ``genarena.train(cfg)`` runs
it as ``genarena-train`` would. The names below are imported on first use, so ``import genarena`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); imported lazily: torch and Lightning take seconds to import
_EXPORTS = {
    "load": ("genarena.api", "load"),
    "evaluate": ("genarena.api", "evaluate"),
    "GeneratorRun": ("genarena.api", "GeneratorRun"),
    "compose": ("genarena.config", "compose"),
    "train": ("genarena.training", "run_training"),
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'genarena' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

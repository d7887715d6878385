"""The Python API: load a trained generator and sample from it, evaluate runs or images, in a few lines.

    import genarena
    run = genarena.load("runs/generator_var_mnist5k/2026-01-01_00-00-00")   # a run directory or a .ckpt
    images = run.sample(64, seed=0, cfg=2.0)                                # uint8 (64, C, H, W)
    scores = genarena.evaluate(run, overrides=["eval.num_samples=1000"])     # FID, IS, KID, P/R, class acc

The commands (``genarena-sample``, ``genarena-eval``) are thin wrappers around the same functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from genarena.checkpoints import resolve_checkpoint
from genarena.config import compose
from genarena.errors import ConfigError
from genarena.evaluation import evaluate_images, evaluate_run, make_evaluator
from genarena.generators import Generator, load_generator
from genarena.generators.generate import Generated, balanced_labels, generate, merge_sampling
from genarena.tokenizers import Tokenizer


@dataclass
class GeneratorRun:
    """A trained generator ready to sample: ``generator`` and ``tokenizer`` (eval mode), ``config`` (what the
    checkpoint was built from: generator, tokenizer, data, num_classes), ``checkpoint`` (the file loaded)."""

    generator: Generator
    tokenizer: Tokenizer
    config: DictConfig
    checkpoint: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def num_classes(self) -> int:
        return int(self.config.num_classes)

    @property
    def sampling(self) -> dict[str, Any]:
        """The run's default sampling options (``generator.sampling`` of its config)."""
        return OmegaConf.to_container(self.config.generator.sampling)

    def labels(self, n: int, spec: str | Sequence[int] = "balanced") -> Tensor:
        """``n`` class labels: ``balanced`` over the classes, or the given class ids cycled to ``n``."""
        if isinstance(spec, str):
            if spec != "balanced":
                raise ConfigError(f"labels={spec!r}: give 'balanced' or a list of class ids")
            return balanced_labels(n, self.num_classes)
        ids = [int(i) for i in spec]
        bad = [i for i in ids if not 0 <= i < self.num_classes]
        if not ids or bad:
            raise ConfigError(f"labels={list(spec)}: class ids must lie in [0, {self.num_classes - 1}]")
        return torch.tensor(ids).repeat(n // len(ids) + 1)[:n]

    def generate(self, labels: int | Sequence[int] | Tensor, *, seed: int = 0, batch_size: int = 64,
                 progress: bool = False, **sampling: Any) -> Generated:
        """Images for ``labels`` (a count, balanced over the classes, or class ids), with timing. ``sampling``
        overrides the run's options (``cfg``, ``temperature``, ``top_k``, ``steps``, ...)."""
        if isinstance(labels, int):
            labels = self.labels(labels)
        labels = torch.as_tensor(labels, dtype=torch.long)
        options = merge_sampling(self.sampling, sampling)
        return generate(self.generator, self.tokenizer, labels, options, seed, batch_size, self.device, progress)

    def sample(self, labels: int | Sequence[int] | Tensor, *, seed: int = 0, batch_size: int = 64,
               **sampling: Any) -> Tensor:
        """uint8 images ``(N, C, H, W)`` for ``labels``; a fixed seed (and batch size) gives identical images."""
        return self.generate(labels, seed=seed, batch_size=batch_size, **sampling).images


def load(path: str | Path, *, checkpoint: str = "best", ema: bool = True,
         device: str | torch.device | None = None, allow_unsafe_load: bool = False) -> GeneratorRun:
    """A generator run directory (its ``checkpoint``: ``best`` or ``last``) or a generator ``.ckpt`` file, loaded
    for sampling on ``device`` (default: CUDA when available). A failed run is refused; the file is read with
    ``weights_only=True`` (``allow_unsafe_load`` for a trusted old file that needs full unpickling)."""
    ckpt = resolve_checkpoint(path, checkpoint)
    generator, tokenizer, hp = load_generator(ckpt, use_ema=ema, allow_unsafe=allow_unsafe_load)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = OmegaConf.create({k: hp[k] for k in ("generator", "tokenizer", "data", "num_classes", "weights")})
    return GeneratorRun(generator.to(device), tokenizer.to(device), config, ckpt, device)


def evaluate(source: GeneratorRun | str | Path | Tensor, *, data: str | None = None, labels: Tensor | None = None,
             overrides: Sequence[str] = (), **sampling: Any) -> dict[str, Any]:
    """Scores (FID, IS, KID, precision/recall, class accuracy; see ``conf/config.yaml``'s ``eval`` block) of:

    - a run (a :class:`GeneratorRun`, a run directory or a checkpoint): ``eval.num_samples`` samples against
      its own data (``sampling`` overrides its options); writes ``metrics.json`` into the run, as genarena-eval;
    - saved images (an ``.npz`` or a folder of PNGs) or a uint8 tensor ``(N, C, H, W)`` (with optional
      ``labels``) against the data option ``data`` (e.g. ``"mnist5k"``).

    ``overrides`` are Hydra overrides of the root config (``eval.num_samples=1000``, ``eval.extractor=domain``).
    """
    if isinstance(source, GeneratorRun):
        source = source.checkpoint
    if isinstance(source, Tensor):
        if data is None:
            raise ConfigError("evaluate(images_tensor) needs data=<dataset option> to compare with")
        return make_evaluator(compose("config", [f"data={data}", *overrides]))(source, labels)
    path = Path(source).expanduser()
    if path.suffix == ".npz" or (path.is_dir() and not (path / "checkpoints").is_dir()):
        if data is None:
            raise ConfigError(f"evaluate({str(source)!r}) compares saved images with data=<dataset option>; give it")
        return evaluate_images(compose("config", [f"data={data}", *overrides]), path)
    if data is not None:
        raise ConfigError("data= applies to saved images; a run is compared with its own data")
    return evaluate_run(compose("config", list(overrides)), path, sampling=sampling)

"""Sample quality through torch-fidelity: FID, Inception Score, KID, precision/recall, class accuracy.

Two feature extractors:

- ``inception``: torch-fidelity's ``inception-v3-compat`` (the standard FID network). Its weights come
  from ``eval.inception_weights`` (a local file), torch's hub cache, or a download.
- ``domain``: the project's :class:`~genarena.metrics.classifier.DomainClassifier` of the dataset,
  registered with torch-fidelity as :data:`DOMAIN_EXTRACTOR` (pool layer ``(B, feature_dim)`` for
  FID / KID / PRC, logits ``(B, num_classes)`` for IS). Fully offline; numbers are only comparable
  between results that name the same classifier (``eval_classifier``, ``eval_classifier_digest``).

``eval.extractor=auto`` takes Inception when its weights are available and the domain classifier
otherwise. The real split's features and FID statistics are cached by torch-fidelity under
``<paths.cache_dir>/fidelity`` once per (dataset, split, resolution, channels, extractor).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch_fidelity
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from genarena.checkpoints import CHECKPOINT_SELECTIONS
from genarena.errors import CheckpointError, ConfigError, GenArenaError
from genarena.metrics.classifier import classifier_cache_path, load_classifier

log = logging.getLogger(__name__)

DOMAIN_EXTRACTOR = "genarena-domain"  # torch-fidelity name of the domain-classifier extractor
INCEPTION_EXTRACTOR = "inception-v3-compat"
EXTRACTORS = ("auto", "inception", "domain")
METRICS = ("fid", "isc", "kid", "prc")
SPLITS = ("train", "val")
# torch-fidelity's Inception weights, and how long ``auto`` waits on the network for them
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
DOWNLOAD_TIMEOUT_S = 10.0
# the metrics' standard definitions (torch-fidelity's defaults); KID and IS shrink them for small N
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
ISC_SPLITS = 10
PRC_NEIGHBORHOOD = 3
# data keys that change how a split is loaded, not which images it holds
LOADER_KEYS = ("batch_size", "num_workers", "download")

# torch-fidelity's result keys -> the flat names genarena reports
RESULT_KEYS = {
    torch_fidelity.KEY_METRIC_FID: "fid",
    torch_fidelity.KEY_METRIC_ISC_MEAN: "isc_mean",
    torch_fidelity.KEY_METRIC_ISC_STD: "isc_std",
    torch_fidelity.KEY_METRIC_KID_MEAN: "kid_mean",
    torch_fidelity.KEY_METRIC_KID_STD: "kid_std",
    torch_fidelity.KEY_METRIC_PRECISION: "precision",
    torch_fidelity.KEY_METRIC_RECALL: "recall",
    torch_fidelity.KEY_METRIC_F_SCORE: "f_score",
}


# ------------------------------------------------------------------------------------- images
def classifier_input(images: Tensor, channels: int) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float ``(B, channels, H, W)`` in ``[-1, 1]`` (RGB -> gray: channel mean)."""
    x = images.float() / 127.5 - 1
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 3 and channels == 1:
        return x.mean(1, keepdim=True)
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1)
    raise ConfigError(f"images with {x.shape[1]} channels cannot feed a {channels}-channel classifier")


class RGBImages(Dataset):
    """uint8 images ``(N, C, H, W)`` with C = 1 or 3; items are uint8 ``(3, H, W)`` as torch-fidelity wants."""

    def __init__(self, images: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"expected uint8 images (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> Tensor:
        return self.images[i].expand(3, -1, -1)


# ------------------------------------------------------------------------- the domain extractor
class DomainFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity extractor around a cached DomainClassifier (file given as ``feature_extractor_weights_path``).

    uint8 ``(B, 3, H, W)`` -> ``pool`` ``(B, feature_dim)`` and/or ``logits`` ``(B, num_classes)``.
    """

    def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ConfigError(f"the {DOMAIN_EXTRACTOR} feature extractor needs feature_extractor_weights_path="
                              "<domain classifier file>")
        self.model, self.meta = load_classifier(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list() -> tuple[str, ...]:
        return ("pool", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "pool", "kid": "pool", "prc": "pool"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> Tensor:
        return torch.zeros(1, 3, 8, 8, dtype=torch.uint8)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        pool, logits = self.model.features_and_logits(classifier_input(x, self.model.in_channels))
        out = {"pool": pool.float(), "logits": logits.float()}
        return tuple(out[name] for name in self.features_list)


def register_domain_extractor() -> None:
    """Register :class:`DomainFeatureExtractor` with torch-fidelity under :data:`DOMAIN_EXTRACTOR` (idempotent)."""
    if DOMAIN_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(DOMAIN_EXTRACTOR, DomainFeatureExtractor)


register_domain_extractor()


# ---------------------------------------------------------------------------- the classifier
def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """genarena's root config (``conf/config.yaml``) with Hydra overrides, inside or outside a Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from genarena.config import config_dir, register_configs

    register_configs()
    try:
        if GlobalHydra.instance().is_initialized():
            return compose("config", overrides=list(overrides))
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except HydraException as e:  # a bad key or option: one line naming it
        raise ConfigError(f"{' '.join(overrides)}: {e}") from None


def classifier_config(cfg: DictConfig) -> DictConfig:
    """The ``task=classifier`` config for ``cfg.data``: the classifier task's defaults with ``cfg``'s data,
    classifier, paths, seed and accelerator; one device, no logger."""
    out = compose_config(["task=classifier", "logger=none"])
    data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    data["batch_size"] = int(cfg.classifier.batch_size)
    out.data = OmegaConf.create(data)
    out.classifier = cfg.classifier
    out.paths.runs_dir, out.paths.cache_dir = str(cfg.paths.runs_dir), str(cfg.paths.cache_dir)
    out.seed = cfg.seed
    if "trainer" in cfg:
        out.trainer.accelerator = cfg.trainer.accelerator
    return out


def ensure_classifier(cfg: DictConfig) -> Path:
    """The cached domain classifier of ``cfg.data``; trains it (as ``genarena-train task=classifier``) when missing."""
    path = classifier_cache_path(cfg.paths.cache_dir, cfg.data)
    if path.is_file():
        return path
    import lightning as L

    from genarena.cli.train import train_classifier
    from genarena.runs import write_metrics

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
    return path


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (12 hex digits)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------- the extractor
@dataclass(frozen=True)
class Extractor:
    """A resolved feature extractor: ``kind`` (inception | domain) and its weights file."""

    kind: str
    weights: Path

    @property
    def fidelity_name(self) -> str:
        return INCEPTION_EXTRACTOR if self.kind == "inception" else DOMAIN_EXTRACTOR

    @cached_property
    def digest(self) -> str:
        return file_digest(self.weights)

    @property
    def cache_tag(self) -> str:
        """Names the extractor in reference-statistics cache names (domain: the classifier's digest)."""
        return "inception" if self.kind == "inception" else f"domain-{self.digest}"

    def describe(self) -> dict[str, str]:
        """What every result records about the extractor that produced it."""
        if self.kind == "inception":
            return {"eval_extractor": "inception"}
        return {"eval_extractor": "domain", "eval_classifier": self.weights.stem, "eval_classifier_digest": self.digest}


def hub_inception_weights() -> Path:
    """Where torch-fidelity's own download puts the Inception weights (torch's hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(INCEPTION_URL).name


def download_inception_weights(timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download the Inception weights into torch's hub cache; network errors raise ``OSError``."""
    dst = hub_inception_weights()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(INCEPTION_URL, timeout=timeout) as response, open(tmp, "wb") as f:
            shutil.copyfileobj(response, f)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def check_eval_options(eval_cfg: DictConfig) -> None:
    """Accepted values of ``eval.extractor``, ``eval.split``, ``eval.metrics`` and ``eval.checkpoint``."""
    if eval_cfg.checkpoint not in CHECKPOINT_SELECTIONS:
        raise ConfigError(f"eval.checkpoint={eval_cfg.checkpoint!r} is not accepted; choose one of "
                          f"{', '.join(CHECKPOINT_SELECTIONS)}")
    if eval_cfg.extractor not in EXTRACTORS:
        raise ConfigError(
            f"eval.extractor={eval_cfg.extractor!r} is not accepted; choose one of {', '.join(EXTRACTORS)}"
        )
    if eval_cfg.split not in SPLITS:
        raise ConfigError(f"eval.split={eval_cfg.split!r} is not accepted; choose one of {', '.join(SPLITS)}")
    bad = [m for m in eval_cfg.metrics if m not in METRICS]
    if bad or not eval_cfg.metrics:
        raise ConfigError(f"eval.metrics={list(eval_cfg.metrics)} is not accepted; choose a non-empty subset of "
                          f"{', '.join(METRICS)}")


def resolve_extractor(cfg: DictConfig) -> Extractor:
    """The extractor ``cfg.eval.extractor`` asks for; ``auto`` falls back to the domain classifier (one log
    line) when no Inception weights are at hand and the download fails."""
    ev = cfg.eval
    check_eval_options(ev)
    given = None
    if ev.inception_weights:
        given = Path(ev.inception_weights).expanduser()
        if not given.is_file():
            raise ConfigError(f"eval.inception_weights={ev.inception_weights} does not exist; give the path of "
                              f"torch-fidelity's Inception weights ({Path(INCEPTION_URL).name}, from {INCEPTION_URL}) "
                              "or drop it to use the download / eval.extractor=domain")
    if ev.extractor == "domain":
        return Extractor("domain", ensure_classifier(cfg))
    weights = given or (hub_inception_weights() if hub_inception_weights().is_file() else None)
    if weights is not None:
        return Extractor("inception", weights)
    try:
        return Extractor("inception", download_inception_weights())
    except OSError as e:
        if ev.extractor == "inception":
            raise GenArenaError(f"eval.extractor=inception: cannot download the Inception weights from {INCEPTION_URL} "
                                f"({type(e).__name__}: {e}); pass eval.inception_weights=<local file> or use "
                                "eval.extractor=domain") from None
        path = ensure_classifier(cfg)
        log.warning("eval.extractor=auto: no Inception weights (eval.inception_weights unset, none in %s, download "
                    "failed: %s); using the domain classifier %s instead", hub_inception_weights().parent,
                    type(e).__name__, path.name)
        return Extractor("domain", path)


# --------------------------------------------------------------------------------- metrics
def data_digest(data_cfg: DictConfig) -> str:
    """sha1 (8 hex digits) of the data config without loader-only keys: which images a split holds."""
    container = OmegaConf.to_container(data_cfg, resolve=True, enum_to_str=True)
    blob = json.dumps({k: v for k, v in container.items() if k not in LOADER_KEYS}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def reference_cache_name(data_cfg: DictConfig, split: str, extractor: Extractor) -> str:
    """torch-fidelity ``input2_cache_name`` of a real split: one per (dataset, split, resolution, extractor)."""
    return (f"genarena-{data_cfg.name}-{split}-r{data_cfg.resolution}-c{data_cfg.channels}-{data_digest(data_cfg)}"
            f"-{extractor.cache_tag}")


def fidelity_metrics(fake: Tensor, real: Tensor, extractor: Extractor, metrics: Sequence[str], *, cache_root: Path,
                     real_cache_name: str, batch_size: int, seed: int) -> dict[str, float]:
    """torch-fidelity's ``metrics`` between uint8 ``fake (N, C, H, W)`` and ``real (M, C, H, W)``.

    The real side's features / FID statistics are cached under ``cache_root`` as ``real_cache_name``.
    Returns the names of :data:`RESULT_KEYS` (``f_score`` with ``prc``), plus ``kid_subset_size`` =
    min(1000, N, M) with ``kid``.
    """
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ConfigError(f"metrics={list(metrics)}: choose a non-empty subset of {', '.join(METRICS)}")
    n, m = len(fake), len(real)
    need = {"fid": 2, "isc": 2, "kid": 2, "prc": PRC_NEIGHBORHOOD + 1}
    short = [k for k in metrics if min(n, m) < need[k]]
    if short:
        raise ConfigError(f"{', '.join(short)} need at least {max(need[k] for k in short)} images per side; "
                          f"got {n} generated and {m} real")
    kwargs: dict[str, Any] = {}
    out: dict[str, float] = {}
    if "kid" in metrics:
        kwargs.update(kid_subset_size=min(KID_SUBSET_SIZE, n, m), kid_subsets=KID_SUBSETS)
        out["kid_subset_size"] = kwargs["kid_subset_size"]
        if kwargs["kid_subset_size"] < KID_SUBSET_SIZE:
            log.info("KID subset size %d (fewer than %d images: %d generated, %d real)", kwargs["kid_subset_size"],
                     KID_SUBSET_SIZE, n, m)
    if "isc" in metrics:
        kwargs["isc_splits"] = min(ISC_SPLITS, n)
    result = torch_fidelity.calculate_metrics(
        input1=RGBImages(fake), **({} if set(metrics) == {"isc"} else {"input2": RGBImages(real)}),  # IS: unary
        input2_cache_name=real_cache_name,
        cache_root=str(cache_root), cache=True, cuda=torch.cuda.is_available(), batch_size=batch_size,
        feature_extractor=extractor.fidelity_name, feature_extractor_weights_path=str(extractor.weights),
        prc_neighborhood=PRC_NEIGHBORHOOD, rng_seed=seed, save_cpu_ram=True, verbose=False,
        **{k: k in metrics for k in METRICS}, **kwargs,
    )
    out.update({RESULT_KEYS[k]: float(v) for k, v in result.items() if k in RESULT_KEYS})
    return out


@torch.no_grad()
def class_accuracy(images: Tensor, labels: Tensor, classifier: str | Path, batch_size: int = 256) -> float:
    """Fraction of uint8 images ``(N, C, H, W)`` the domain classifier assigns to their label ``(N,)``."""
    model, meta = load_classifier(classifier)
    if len(labels) != len(images):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= meta["num_classes"]):
        raise ConfigError(f"labels must lie in [0, {meta['num_classes'] - 1}] (the classifier's classes); "
                          f"got [{int(labels.min())}, {int(labels.max())}]")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        logits = model(classifier_input(x.to(device), model.in_channels))
        correct += int((logits.argmax(-1).cpu() == y.long()).sum())
    return correct / max(1, len(labels))


class Evaluator:
    """Compares generated images with a real split of ``cfg.data`` under ``cfg.eval``.

    The extractor is resolved (and the domain classifier trained if needed) at construction; the real
    split is loaded on first use and kept, unless given as ``real`` (uint8 ``(M, C, R, R)``, labels ``(M,)``).
    """

    def __init__(self, cfg: DictConfig, real: tuple[Tensor, Tensor] | None = None) -> None:
        self.cfg = cfg
        self.data_cfg = cfg.data
        self.split: str = cfg.eval.split
        self.extractor = resolve_extractor(cfg)
        self._real = real

    @property
    def real(self) -> tuple[Tensor, Tensor]:
        """The real split as uint8 ``(M, C, R, R)`` and labels ``(M,)``."""
        if self._real is None:
            from genarena.data import ImageDataModule

            self._real = ImageDataModule(self.data_cfg).real_images_uint8(self.split)
        return self._real

    @property
    def cache_root(self) -> Path:
        return Path(self.cfg.paths.cache_dir) / "fidelity"

    @property
    def reference_name(self) -> str:
        return reference_cache_name(self.data_cfg, self.split, self.extractor)

    def classifier(self) -> Path:
        return self.extractor.weights if self.extractor.kind == "domain" else ensure_classifier(self.cfg)

    def check_images(self, images: Tensor) -> None:
        d = self.data_cfg
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ConfigError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if tuple(images.shape[1:]) != (d.channels, d.resolution, d.resolution):
            raise ConfigError(f"images are {tuple(images.shape[1:])} (C, H, W) but data={d.name} gives "
                              f"{(d.channels, d.resolution, d.resolution)}; compare samples with the data they model")

    def __call__(self, images: Tensor, labels: Tensor | None = None,
                 metrics: Sequence[str] | None = None) -> dict[str, Any]:
        """Flat scalars for uint8 ``images (N, C, R, R)``: the requested metrics (default ``eval.metrics``),
        ``class_acc`` when ``labels (N,)`` are given, and ``eval_*`` keys naming what was compared."""
        self.check_images(images)
        metrics = list(self.cfg.eval.metrics if metrics is None else metrics)
        real, _ = self.real
        out: dict[str, Any] = {
            "eval_n": len(images), "eval_n_real": len(real), "eval_split": self.split, "eval_data": self.data_cfg.name,
            **self.extractor.describe(),
        }
        out.update(fidelity_metrics(images, real, self.extractor, metrics, cache_root=self.cache_root,
                                    real_cache_name=self.reference_name, batch_size=self.cfg.eval.batch_size,
                                    seed=self.cfg.eval.seed))
        if labels is not None:
            out["class_acc"] = class_accuracy(images, labels, self.classifier(), self.cfg.eval.batch_size)
        return out

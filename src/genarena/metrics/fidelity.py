"""Sample quality through torch-fidelity: FID, Inception Score, KID, precision/recall, class accuracy.

:class:`Evaluator` compares generated uint8 images with a real split of the data under the ``eval``
block, with the feature extractor :mod:`genarena.metrics.extractors` resolves: Inception, or the
project's domain classifier registered with torch-fidelity as :data:`DOMAIN_EXTRACTOR` (pool layer
``(B, feature_dim)`` for FID / KID / PRC, logits ``(B, num_classes)`` for IS). The real split's
features and FID statistics are cached by torch-fidelity under ``<paths.cache_dir>/fidelity`` once per
(dataset, split, resolution, channels, extractor). The domain classifier file comes from the caller
(a provider): this package never trains anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch_fidelity
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from genarena.config import EVAL_METRICS
from genarena.data import ImageDataModule
from genarena.errors import ConfigError, DataError
from genarena.metrics.classifier import data_identity, load_classifier
from genarena.metrics.extractors import DOMAIN_EXTRACTOR, ClassifierProvider, Extractor, resolve_extractor

log = logging.getLogger(__name__)

# the metrics' standard definitions (torch-fidelity's defaults); KID and IS shrink them for small N
KID_SUBSET_SIZE = 1000
KID_SUBSETS = 100
ISC_SPLITS = 10
PRC_NEIGHBORHOOD = 3

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


# --------------------------------------------------------------------------------- metrics
def data_digest(data_cfg: DictConfig) -> str:
    """sha1 (8 hex digits) of the data config without loader-only keys: which images a split holds."""
    blob = json.dumps(data_identity(data_cfg), sort_keys=True, default=str)
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
    bad = [m for m in metrics if m not in EVAL_METRICS]
    if bad or not metrics:
        raise ConfigError(f"metrics={list(metrics)}: choose a non-empty subset of {', '.join(EVAL_METRICS)}")
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
        **{k: k in metrics for k in EVAL_METRICS}, **kwargs,
    )
    out.update({RESULT_KEYS[k]: float(v) for k, v in result.items() if k in RESULT_KEYS})
    return out


# ------------------------------------------------------------------- reference FID statistics
def fid_layer(extractor: Extractor) -> str:
    """The feature layer FID uses with ``extractor`` (Inception: pool3 ``2048``; domain: ``pool``)."""
    return FEATURE_EXTRACTORS_REGISTRY[extractor.fidelity_name].get_default_feature_layer_for_metric("fid")


def fid_statistics(images: Tensor, extractor: Extractor, batch_size: int) -> dict[str, np.ndarray]:
    """``{"mu": (D,), "sigma": (D, D)}`` of uint8 ``images (N, C, H, W)`` in ``extractor``'s FID layer."""
    layer = fid_layer(extractor)
    cuda = torch.cuda.is_available()
    net = create_feature_extractor(extractor.fidelity_name, [layer], cuda=cuda, verbose=False,
                                   feature_extractor_weights_path=str(extractor.weights))
    features = get_featuresdict_from_dataset(RGBImages(images), net, batch_size, cuda, True, False)[layer]
    return fid_features_to_statistics(features)


def write_fid_statistics(path: str | Path, stats: dict[str, np.ndarray], extractor: Extractor, n: int,
                         source: str) -> Path:
    """An ``.npz`` with ``mu`` and ``sigma`` (the layout of ADM's reference batches and of most papers' FID
    statistics) plus what they were computed with: ``extractor`` (e.g. ``domain-<digest>``), ``n``, ``source``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=stats["mu"], sigma=stats["sigma"], extractor=np.array(extractor.cache_tag),
             n=np.array(n), source=np.array(source))
    return path


def read_fid_statistics(path: str | Path, extractor: Extractor) -> dict[str, np.ndarray]:
    """``mu`` and ``sigma`` of a statistics ``.npz``; an ``extractor`` entry that names another extractor than the
    one evaluating is an error (a file without one, e.g. ADM's, is taken as computed with ``extractor``)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"eval.fid_statistics_file={path} does not exist; write one with `genarena-eval "
                          "write_statistics=<file.npz> data=<option> eval.split=<split>`")
    try:
        with np.load(p, allow_pickle=False) as f:
            stats = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"eval.fid_statistics_file={p} is not a readable .npz ({type(e).__name__}: {e})") from None
    missing = [k for k in ("mu", "sigma") if k not in stats]
    if missing:
        raise DataError(f"eval.fid_statistics_file={p} has no {' / '.join(missing)} (found {', '.join(stats)}); "
                        "it must hold FID statistics mu (D,) and sigma (D, D)")
    made_with = str(stats["extractor"]) if "extractor" in stats else None
    if made_with is not None and made_with != extractor.cache_tag:
        raise ConfigError(f"eval.fid_statistics_file={p} was computed with the {made_with} extractor, but this "
                          f"evaluation uses {extractor.cache_tag}; FIDs are comparable only with the same features")
    return {"mu": stats["mu"], "sigma": stats["sigma"]}


def fid_against_statistics(fake: Tensor, extractor: Extractor, reference: dict[str, np.ndarray],
                           batch_size: int) -> float:
    """FID of uint8 ``fake`` images against precomputed reference statistics (e.g. ADM's ImageNet ``.npz``)."""
    stats = fid_statistics(fake, extractor, batch_size)
    if reference["mu"].shape != stats["mu"].shape:
        raise ConfigError(f"the reference statistics have {reference['mu'].shape[0]}-dimensional features but the "
                          f"{extractor.kind} extractor gives {stats['mu'].shape[0]}; they come from another network")
    reference = {k: reference[k].astype(stats[k].dtype) for k in ("mu", "sigma")}
    return float(fid_statistics_to_metric(stats, reference, False)[torch_fidelity.KEY_METRIC_FID])


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

    ``classifier()`` returns the domain classifier file of ``cfg.data`` (the extractor, and the judge of class
    accuracy); the extractor is resolved at construction; the real split is loaded on first use and kept,
    unless given as ``real`` (uint8 ``(M, C, R, R)``, labels ``(M,)``).
    """

    def __init__(self, cfg: DictConfig, classifier: ClassifierProvider,
                 real: tuple[Tensor, Tensor] | None = None) -> None:
        self.cfg = cfg
        self.data_cfg = cfg.data
        self.split: str = cfg.eval.split
        self.classifier = classifier
        self.extractor = resolve_extractor(cfg.eval, classifier)
        self._real = real

    @property
    def real(self) -> tuple[Tensor, Tensor]:
        """The real split as uint8 ``(M, C, R, R)`` and labels ``(M,)``."""
        if self._real is None:
            self._real = ImageDataModule(self.data_cfg).real_images_uint8(self.split)
        return self._real

    @property
    def cache_root(self) -> Path:
        return Path(self.cfg.paths.cache_dir) / "fidelity"

    @property
    def reference_name(self) -> str:
        return reference_cache_name(self.data_cfg, self.split, self.extractor)

    def classifier_file(self) -> Path:
        """The domain classifier that judges class accuracy (the extractor itself when it is the domain one)."""
        return self.extractor.weights if self.extractor.kind == "domain" else self.classifier()

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
        out: dict[str, Any] = {"eval_n": len(images), "eval_split": self.split, "eval_data": self.data_cfg.name,
                               **self.extractor.describe()}
        stats_file = self.cfg.eval.fid_statistics_file
        if stats_file and "fid" in metrics:  # FID against the given statistics; the other metrics need real images
            reference = read_fid_statistics(stats_file, self.extractor)
            out["fid"] = fid_against_statistics(images, self.extractor, reference, self.cfg.eval.batch_size)
            out["eval_fid_reference"] = Path(stats_file).name
            metrics = [m for m in metrics if m != "fid"]
        if metrics:
            real, _ = self.real
            out["eval_n_real"] = len(real)
            out.update(fidelity_metrics(images, real, self.extractor, metrics, cache_root=self.cache_root,
                                        real_cache_name=self.reference_name, batch_size=self.cfg.eval.batch_size,
                                        seed=self.cfg.eval.seed))
        if labels is not None:
            out["class_acc"] = class_accuracy(images, labels, self.classifier_file(), self.cfg.eval.batch_size)
        return out

"""Which feature extractor an evaluation uses, and where its weights come from.

- ``inception``: torch-fidelity's ``inception-v3-compat`` (the standard FID network). Its weights come
  from ``eval.inception_weights`` (a local file), torch's hub cache, or a download.
- ``domain``: the project's domain classifier of the dataset (:mod:`genarena.metrics.classifier`), a
  file the caller provides (``classifier()``: the training layer trains it when it is missing). Fully
  offline; numbers are only comparable between results that name the same classifier digest.

``eval.extractor=auto`` takes Inception when its weights are available and the domain classifier
otherwise, with one log line saying so.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig

from genarena.config import check_eval_options
from genarena.errors import ConfigError, GenArenaError

log = logging.getLogger(__name__)

DOMAIN_EXTRACTOR = "genarena-domain"  # torch-fidelity name of the domain-classifier extractor
INCEPTION_EXTRACTOR = "inception-v3-compat"
# torch-fidelity's Inception weights, and how long ``auto`` waits on the network for them
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
DOWNLOAD_TIMEOUT_S = 10.0

ClassifierProvider = Callable[[], Path]  # returns the domain classifier file of the evaluated data


def file_digest(path: str | Path) -> str:
    """sha1 of a file's bytes (12 hex digits)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


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


def resolve_extractor(ev: DictConfig, classifier: ClassifierProvider) -> Extractor:
    """The extractor the ``eval`` block asks for; ``auto`` falls back to the domain classifier (one log line)
    when no Inception weights are at hand and the download fails."""
    check_eval_options(ev)
    given = None
    if ev.inception_weights:
        given = Path(ev.inception_weights).expanduser()
        if not given.is_file():
            raise ConfigError(f"eval.inception_weights={ev.inception_weights} does not exist; give the path of "
                              f"torch-fidelity's Inception weights ({Path(INCEPTION_URL).name}, from {INCEPTION_URL}) "
                              "or drop it to use the download / eval.extractor=domain")
    if ev.extractor == "domain":
        return Extractor("domain", classifier())
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
        path = classifier()
        log.warning("eval.extractor=auto: no Inception weights (eval.inception_weights unset, none in %s, download "
                    "failed: %s); using the domain classifier %s instead", hub_inception_weights().parent,
                    type(e).__name__, path.name)
        return Extractor("domain", path)

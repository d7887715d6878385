"""Run directories: the fingerprint of a resolved config, ``metrics.json``, finding finished runs.

A run directory (``runs/<experiment>/<time or sweep job>/``) holds ``config.yaml`` (resolved),
``checkpoints/``, ``samples/`` and ``metrics.json``: flat scalars a sweep or a report reads back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genarena.errors import ConfigError

EVAL_DIR = "eval"  # genarena-eval writes <run>/eval/<extractor>_n<N>_seed<seed>/metrics.json

# keys that change where or how a run is logged, not what it computes
VOLATILE_KEYS = ("paths", "logger", "force", "sweep_name", "experiment_name", "eval.every_n_steps",
                 "trainer.enable_progress_bar", "trainer.log_every_n_steps", "log")


def config_fingerprint(cfg: DictConfig) -> str:
    """sha1 of the resolved config without :data:`VOLATILE_KEYS` (12 hex digits)."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    container.pop("hydra", None)
    for key in VOLATILE_KEYS:
        parts = key.split(".")
        node = container
        for p in parts[:-1]:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    blob = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def check_writable_dir(key: str, path: str | Path) -> None:
    """:class:`ConfigError` naming ``key`` unless ``path`` is a writable directory or can be created as one. The
    nearest existing folder is probed (a temporary folder made and removed there), so nothing is left behind and
    a command fails before its work, not after."""
    p = Path(path).expanduser().absolute()
    ancestor = p
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{key}={path} cannot be a directory: {ancestor} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genarena-probe-", dir=ancestor))
    except OSError as e:
        raise ConfigError(f"{key}={path} cannot be written ({type(e).__name__}: {e.strerror or e} in {ancestor}); "
                          "choose a writable directory") from None


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _clean(value.item())
    return value


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` atomically (NaN/inf become null); returns its path."""
    path = Path(run_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({k: _clean(v) for k, v in metrics.items()}, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def update_metrics(run_dir: str | Path, extra: dict[str, Any]) -> Path:
    """Merge ``extra`` into an existing ``metrics.json``."""
    return write_metrics(run_dir, {**read_metrics(run_dir), **extra})


@dataclass
class RunRecord:
    """A run directory found by :func:`iter_runs`: its ``metrics.json`` content (``{}`` when unreadable, with
    ``error`` saying why) and the file's modification time."""

    dir: Path
    metrics: dict[str, Any]
    mtime: float
    error: str | None = None


def iter_runs(root: str | Path) -> Iterator[RunRecord]:
    """Every run directory below ``root`` (a directory holding ``metrics.json``), in path order; the
    evaluation outputs that genarena-eval writes inside a run (``<run>/eval/...``) are not runs."""
    root = Path(root)
    if not root.is_dir():
        return
    for path in sorted(root.rglob("metrics.json")):
        if EVAL_DIR in path.relative_to(root).parts[:-1]:
            continue
        try:
            m = json.loads(path.read_text())
            if not isinstance(m, dict):
                raise ValueError("not a JSON object")
            yield RunRecord(path.parent, m, path.stat().st_mtime)
        except (OSError, ValueError) as e:
            yield RunRecord(path.parent, {}, 0.0, f"{path.name}: {e}")


def find_finished_run(search_root: str | Path, fingerprint: str) -> Path | None:
    """A run directory under ``search_root`` that finished with the same config fingerprint."""
    for run in iter_runs(search_root):
        if run.metrics.get("status") == "finished" and run.metrics.get("config_fingerprint") == fingerprint:
            return run.dir
    return None


def newest_finished_runs(root: str | Path, task: str, key: str, **match: Any) -> dict[str, Path]:
    """The newest finished run of ``task`` under ``root`` per value of ``metrics[key]`` (e.g. per paradigm or
    per tokenizer), among runs whose metrics equal ``match``."""
    found: dict[str, RunRecord] = {}
    for run in iter_runs(root):
        m = run.metrics
        if (m.get("task") == task and m.get("status") == "finished" and m.get(key)
                and all(m.get(k) == v for k, v in match.items())):
            if m[key] not in found or run.mtime > found[m[key]].mtime:
                found[m[key]] = run
    return {k: r.dir for k, r in found.items()}


def find_tokenizer_run(runs_dir: str | Path, tokenizer: str, data: str, resolution: int, channels: int) -> Path | None:
    """The newest finished tokenizer run of ``tokenizer`` trained on ``data`` at that resolution/channels."""
    runs = {k: d for k, d in newest_finished_runs(runs_dir, "tokenizer", "tokenizer", data=data, resolution=resolution,
                                                   channels=channels).items()
            if (d / "checkpoints" / "last.ckpt").is_file()}
    return runs.get(tokenizer)

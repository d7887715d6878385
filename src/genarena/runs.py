"""Run directories: the fingerprint of a resolved config, ``metrics.json``, finding finished runs.

A run directory (``runs/<experiment>/<time or sweep job>/``) holds ``config.yaml`` (resolved),
``checkpoints/``, ``samples/`` and ``metrics.json``: flat scalars a sweep or a report reads back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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


def find_finished_run(search_root: str | Path, fingerprint: str) -> Path | None:
    """A run directory under ``search_root`` that finished with the same config fingerprint."""
    root = Path(search_root)
    if not root.is_dir():
        return None
    for path in sorted(root.rglob("metrics.json")):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if m.get("status") == "finished" and m.get("config_fingerprint") == fingerprint:
            return path.parent
    return None


def find_tokenizer_run(runs_dir: str | Path, tokenizer: str, data: str, resolution: int, channels: int) -> Path | None:
    """The newest finished tokenizer run of ``tokenizer`` trained on ``data`` at that resolution/channels."""
    best, best_time = None, -1.0
    root = Path(runs_dir)
    if not root.is_dir():
        return None
    for path in root.rglob("metrics.json"):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (m.get("status") == "finished" and m.get("task") == "tokenizer" and m.get("tokenizer") == tokenizer
                and m.get("data") == data and m.get("resolution") == resolution and m.get("channels") == channels
                and (path.parent / "checkpoints" / "last.ckpt").is_file()):
            t = path.stat().st_mtime
            if t > best_time:
                best, best_time = path.parent, t
    return best

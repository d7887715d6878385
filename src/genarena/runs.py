"""Run directories: the fingerprint of a resolved config, ``metrics.json``, finding finished and resumable runs.

A run directory (``runs/<experiment>/<time or sweep job>/``) holds ``config.yaml`` (resolved),
``checkpoints/``, ``samples/`` and ``metrics.json``: flat scalars a sweep or a report reads back.

``status`` is ``running`` -> ``finished``, ``failed`` (an error), or ``interrupted`` (a signal: SIGTERM,
Ctrl-C, or a process that vanished). A running run records its process (``pid``, ``host``, ``started_at``,
a ``heartbeat`` refreshed every minute, and its SLURM job); whoever reads a ``running`` run whose process is
gone (:func:`process_gone`) rewrites it as ``interrupted``. Interrupted runs with a checkpoint are what
``resume=auto`` continues (:func:`find_resumable_runs`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genarena.errors import ConfigError

EVAL_DIR = "eval"  # genarena-eval writes <run>/eval/<extractor>_n<N>_seed<seed>/metrics.json

# keys that change where or how a run is logged, or how it is started (resume), not what it computes
VOLATILE_KEYS = ("paths", "logger", "force", "resume", "sweep_name", "experiment_name", "eval.every_n_steps",
                 "trainer.enable_progress_bar", "trainer.log_every_n_steps", "log")

HEARTBEAT_EVERY_S = 60.0  # a running run refreshes metrics.json's heartbeat this often
STALE_AFTER_S = 900.0  # a run on another host without a heartbeat for this long is taken as gone
_METRICS_LOCK = threading.RLock()  # the heartbeat thread and the run share metrics.json


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
    tmp = path.with_suffix(f".json.{os.getpid()}.tmp")
    with _METRICS_LOCK:
        tmp.write_text(json.dumps({k: _clean(v) for k, v in metrics.items()}, indent=2, sort_keys=True))
        os.replace(tmp, path)
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def update_metrics(run_dir: str | Path, extra: dict[str, Any]) -> Path:
    """Merge ``extra`` into an existing ``metrics.json``."""
    with _METRICS_LOCK:
        return write_metrics(run_dir, {**read_metrics(run_dir), **extra})


# ------------------------------------------------------------------------------ the process of a run
def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), telling a reused pid apart; None
    where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def process_record() -> dict[str, Any]:
    """What ``metrics.json`` records about the process running a run."""
    now = time.time()
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _process_start(os.getpid()),
            "started_at": now, "heartbeat": now, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0))}


def process_gone(m: dict[str, Any]) -> str | None:
    """Why the process that wrote a ``running`` record is certainly gone (None while it may still run).

    On the same host, the pid is dead (or now another process); in the same SLURM job, this is a later
    incarnation of it (requeued); on another host, its heartbeat is older than :data:`STALE_AFTER_S`.
    """
    pid, host = m.get("pid"), m.get("host")
    if pid is None or host is None:
        return None  # a record without its process (an older genarena): cannot tell
    job = os.environ.get("SLURM_JOB_ID")
    if job and m.get("slurm_job_id") == job and int(os.environ.get("SLURM_RESTART_COUNT", 0)) > int(
            m.get("slurm_restart_count") or 0):
        return f"SLURM job {job} was requeued"
    if host == socket.gethostname():
        if pid == os.getpid():
            return None
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"process {pid} on {host} is gone"
        except PermissionError:  # alive, another user's
            pass
        start = m.get("pid_start")
        if start is not None and _process_start(int(pid)) not in (None, start):
            return f"process {pid} on {host} is gone (the pid now belongs to another process)"
        return None
    beat = m.get("heartbeat") or m.get("started_at")
    if isinstance(beat, (int, float)) and time.time() - beat > STALE_AFTER_S:
        return f"no heartbeat from process {pid} on {host} for {(time.time() - beat) / 60:.0f} minutes"
    return None


def refresh_status(run_dir: str | Path, m: dict[str, Any]) -> dict[str, Any]:
    """``m`` with a ``running`` status whose process is gone turned into ``interrupted`` (and written back to
    ``metrics.json`` when possible)."""
    if m.get("status") != "running":
        return m
    reason = process_gone(m)
    if reason is None:
        return m
    m = {**m, "status": "interrupted", "interrupted_reason": reason}
    try:
        write_metrics(run_dir, m)
    except OSError:  # a read-only copy: report it, leave the file
        pass
    return m


@contextmanager
def heartbeat(run_dir: str | Path, every_s: float = HEARTBEAT_EVERY_S) -> Iterator[None]:
    """Refresh ``heartbeat`` in ``metrics.json`` every ``every_s`` seconds while the block runs (a daemon
    thread; it stops before the block's caller writes the final status)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            with _METRICS_LOCK:
                m = read_metrics(run_dir)
                if m.get("status") == "running" and m.get("pid") == os.getpid():
                    write_metrics(run_dir, {**m, "heartbeat": time.time()})

    thread = threading.Thread(target=beat, name="genarena-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
            mtime = path.stat().st_mtime
            yield RunRecord(path.parent, refresh_status(path.parent, m), mtime)
        except (OSError, ValueError) as e:
            yield RunRecord(path.parent, {}, 0.0, f"{path.name}: {e}")


def find_finished_run(search_root: str | Path, fingerprint: str) -> Path | None:
    """A run directory under ``search_root`` that finished with the same config fingerprint."""
    for run in iter_runs(search_root):
        if run.metrics.get("status") == "finished" and run.metrics.get("config_fingerprint") == fingerprint:
            return run.dir
    return None


def resumable(m: dict[str, Any]) -> bool:
    """Whether a run record can be continued: interrupted (by a signal, or its process vanished), or failed by a
    signal in an older genarena. Runs that failed on an error (divergence, a bug) start again instead."""
    if m.get("status") == "interrupted":
        return True
    return m.get("status") == "failed" and str(m.get("error", "")).startswith(
        ("KeyboardInterrupt", "SIGTERMException", "SystemExit"))


def find_resumable_runs(search_root: str | Path, fingerprint: str) -> list[RunRecord]:
    """The resumable runs (:func:`resumable`) under ``search_root`` with this config fingerprint, newest first
    (by their start, else their record's time)."""
    found = [r for r in iter_runs(search_root)
             if r.metrics.get("config_fingerprint") == fingerprint and resumable(r.metrics)]
    return sorted(found, key=lambda r: r.metrics.get("started_at") or r.mtime, reverse=True)


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

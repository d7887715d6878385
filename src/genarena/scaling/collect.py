"""Collect finished generator runs into a table (a list of flat dicts, one per run).

Two sources: local run directories (every ``metrics.json`` below them; works offline) and the W&B API
(the flat scalars of each run's summary, which ``genarena-train`` fills with the same keys). Failed or
unfinished runs are reported, not returned; re-runs of the same point are reduced to the newest.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from genarena.runs import EVAL_DIR
from genarena.scaling.fit import ScalingError

log = logging.getLogger(__name__)

# runs that agree on these keys are re-runs of one scaling point (steps and batch are part of the point:
# the compute sweep trains one depth for several lengths)
POINT_KEYS = ("paradigm", "data", "depth", "width", "steps", "batch_size")
KEEP = ("newest", "all")


@dataclass
class Collection:
    """Kept runs plus what was left out and why. Each run has ``run`` (where it came from) and ``time``."""

    runs: list[dict[str, Any]]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run, reason): failed, running, unreadable
    other_tasks: int = 0
    filtered: int = 0  # finished generator runs of another sweep or data set
    replaced: list[str] = field(default_factory=list)  # older re-runs of a kept point

    def summary(self) -> str:
        """One line: ``12 runs (var 4, ar 4, ...); skipped 2 (failed 1, running 1); ...``."""
        per = Counter(str(r.get("paradigm")) for r in self.runs)
        parts = [f"{len(self.runs)} finished generator run(s) from {self.source}"
                 + (f" ({', '.join(f'{k} {v}' for k, v in sorted(per.items()))})" if per else "")]
        if self.skipped:
            why = Counter(reason.split(":")[0] for _, reason in self.skipped)
            counts = ", ".join(f"{k} {v}" for k, v in sorted(why.items()))
            parts.append(f"skipped {len(self.skipped)} ({counts})")
        if self.replaced:
            parts.append(f"{len(self.replaced)} older re-run(s) replaced by the newest")
        if self.filtered:
            parts.append(f"{self.filtered} of another sweep/data left out")
        if self.other_tasks:
            parts.append(f"{self.other_tasks} tokenizer/classifier run(s) ignored")
        return "; ".join(parts)


def _status_filter(rows: Iterable[tuple[str, dict[str, Any]]], sweep: str | None, data: str | None,
                   source: str) -> Collection:
    col = Collection(runs=[], source=source)
    for where, m in rows:
        task = m.get("task")
        if task is not None and task != "generator":
            col.other_tasks += 1
            continue
        status = m.get("status")
        if status != "finished":
            detail = f": {m['error']}" if m.get("error") else ""
            col.skipped.append((where, f"{status or 'no status'}{detail}"))
            continue
        if task is None and "paradigm" not in m:
            col.other_tasks += 1
            continue
        if (sweep is not None and m.get("sweep") != sweep) or (data is not None and m.get("data") != data):
            col.filtered += 1
            continue
        col.runs.append(m)
    return col


def keep_newest(runs: Sequence[dict[str, Any]], keys: Sequence[str] = POINT_KEYS,
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Among runs equal on ``keys`` keep the one with the largest ``time``; returns (kept, replaced)."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    replaced: list[dict[str, Any]] = []
    for r in runs:
        k = tuple(r.get(key) for key in keys)
        cur = best.get(k)
        if cur is None:
            best[k] = r
        elif (r.get("time") or 0) > (cur.get("time") or 0):
            replaced.append(cur)
            best[k] = r
        else:
            replaced.append(r)
    return list(best.values()), replaced


def _finish(col: Collection, keep: str) -> Collection:
    if keep not in KEEP:
        raise ScalingError(f"keep={keep!r} is not accepted; choose one of {', '.join(KEEP)}")
    if keep == "newest":
        col.runs, old = keep_newest(col.runs)
        col.replaced = [str(r.get("run")) for r in old]
    col.runs.sort(key=lambda r: (str(r.get("paradigm")), r.get("depth") or 0, r.get("steps") or 0,
                                 r.get("time") or 0))
    log.debug("%s", col.summary())
    return col


def collect_local(dirs: Sequence[str | Path], *, sweep: str | None = None, data: str | None = None,
                  keep: str = "newest") -> Collection:
    """Every ``metrics.json`` below ``dirs``: finished generator runs (optionally of one ``sweep`` /
    ``data``), each with ``run`` = its directory and ``time`` = the file's modification time."""
    if not dirs:
        raise ScalingError("no run directory given (e.g. --runs runs/)")
    found: list[tuple[str, dict[str, Any]]] = []
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise ScalingError(f"run directory {str(d)!r} does not exist or is not a directory")
        for path in sorted(root.rglob("metrics.json")):
            if EVAL_DIR in path.relative_to(root).parts[:-1]:
                continue  # genarena-eval's output inside a run: its scalars are merged into the run's own file
            try:
                m = json.loads(path.read_text())
                if not isinstance(m, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as e:
                found.append((str(path.parent), {"status": "unreadable", "error": f"{path.name}: {e}"}))
                continue
            m = {**m, "run": str(path.parent), "time": path.stat().st_mtime}
            found.append((str(path.parent), m))
    col = _status_filter(found, sweep, data, source=", ".join(str(d) for d in dirs))
    return _finish(col, keep)


def _flat(summary: Any) -> dict[str, Any]:
    """The scalar entries of a W&B summary (nested values and media are dropped)."""
    items = summary.items() if hasattr(summary, "items") else []
    out = {}
    for k, v in items:
        if isinstance(v, (str, bool, int)) or v is None:
            out[k] = v
        elif isinstance(v, float):
            out[k] = v if math.isfinite(v) else None
    return out


def _timestamp(run: Any) -> float:
    created = getattr(run, "created_at", None)
    if isinstance(created, str):
        try:
            return datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return 0.0


def collect_wandb(project: str, *, entity: str | None = None, group: str | None = None,
                  sweep: str | None = None, data: str | None = None, keep: str = "newest",
                  api: Any = None, timeout: int = 30) -> Collection:
    """Runs of W&B ``entity/project`` (``api.runs(path, filters={"group": group})``), read from their
    summaries; ``status`` comes from the summary, else the W&B run state. ``api`` defaults to
    ``wandb.Api(timeout=timeout)`` (wandb is imported only here)."""
    path = f"{entity}/{project}" if entity else project
    if api is None:
        try:
            import wandb
        except ImportError:
            raise ScalingError("--source wandb needs the wandb package (pip install wandb)") from None
        try:
            api = wandb.Api(timeout=timeout)
        except Exception as e:
            raise ScalingError(f"cannot open the W&B API ({type(e).__name__}: {e}); log in with "
                               "`wandb login` or collect local runs with --runs") from None
    filters = {"group": group} if group else {}
    rows: list[tuple[str, dict[str, Any]]] = []
    try:
        for run in api.runs(path, filters=filters):
            m = _flat(run.summary)
            m.setdefault("status", "finished" if getattr(run, "state", None) == "finished" else
                         getattr(run, "state", None))
            where = "/".join(getattr(run, "path", None) or [path, str(getattr(run, "id", "?"))])
            m.update(run=where, time=_timestamp(run))
            rows.append((where, m))
    except ScalingError:
        raise
    except Exception as e:
        raise ScalingError(f"cannot read runs of W&B project {path!r}"
                           + (f" group {group!r}" if group else "")
                           + f" ({type(e).__name__}: {e}); check the network and `wandb login`, "
                           "or collect local runs with --runs") from None
    col = _status_filter(rows, sweep, data, source=f"wandb:{path}" + (f" group={group}" if group else ""))
    return _finish(col, keep)

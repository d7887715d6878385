"""Collect finished generator runs into a table (a list of flat dicts, one per run).

Three sources: local run directories (every ``metrics.json`` below them; works offline), the W&B API
(the flat scalars of each run's summary, which ``genarena-train`` fills with the same keys) and the
``points.csv`` that ``genarena-scaling`` writes (a committed study re-plotted without its runs). Failed or
unfinished runs are reported, not returned. Runs of one scaling point with different seeds are all
kept; re-runs of the same point and seed are reduced to the newest.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from genarena.runs import iter_runs
from genarena.scaling.fit import ScalingError

log = logging.getLogger(__name__)

# runs that agree on these keys are seeds of one scaling point (steps and batch are part of the point:
# the compute sweep trains one depth for several lengths)
SCALING_POINT_KEYS = ("paradigm", "data", "depth", "width", "steps", "batch_size")
SEED_KEY = "seed"
# runs that agree on these keys too are re-runs of one point and seed: --keep newest keeps the newest
POINT_KEYS = (*SCALING_POINT_KEYS, SEED_KEY)
KEEP = ("newest", "all")
POINTS_FILE = "points.csv"
# the columns of points.csv, one row per kept run
POINT_COLUMNS = (
    "paradigm", "data", "sweep", "depth", "width", "heads", "tokenizer", "params", "params_non_embedding",
    "tokens_per_image", "steps", "batch_size", "seed", "images_seen", "tokens_seen", "flops_train_per_image",
    "flops_train_total", "flops_sample_per_image", "sampling_steps", "train_time_s", "val_loss",
    "val_loss_best", "val_loss_best_step", "val_loss_last", "val_loss_scale_mean", "val_acc",
    "val_token_error", "fid", "isc_mean", "kid_mean", "precision", "recall", "class_acc",
    "sample_s_per_image", "eval_n", "eval_extractor", "on_frontier", "time", "run",
)
TEXT_COLUMNS = frozenset({"paradigm", "data", "sweep", "tokenizer", "eval_extractor", "run"})
BOOL_COLUMNS = frozenset({"on_frontier"})
_INT = re.compile(r"[+-]?\d+")


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
        """One line: ``12 runs (var 4, ar 4, ...); 3 seeds (0, 1, 2); skipped 2 (failed 1, running 1); ...``."""
        per = Counter(str(r.get("paradigm")) for r in self.runs)
        parts = [f"{len(self.runs)} finished generator run(s) from {self.source}"
                 + (f" ({', '.join(f'{k} {v}' for k, v in sorted(per.items()))})" if per else "")]
        seeds = sorted({r.get(SEED_KEY) for r in self.runs if r.get(SEED_KEY) is not None}, key=str)
        if len(seeds) > 1:
            parts.append(f"{len(seeds)} seeds ({', '.join(map(str, seeds))})")
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
        for run in iter_runs(root):  # genarena-eval's outputs inside a run are not runs
            if run.error is not None:
                found.append((str(run.dir), {"status": "unreadable", "error": run.error}))
            else:
                found.append((str(run.dir), {**run.metrics, "run": str(run.dir), "time": run.mtime}))
    if not found:
        _no_runs_found(dirs)
    col = _status_filter(found, sweep, data, source=", ".join(str(d) for d in dirs))
    return _finish(col, keep)


def _no_runs_found(dirs: Sequence[str | Path]) -> None:
    """Raise :class:`ScalingError` for run directories without any ``metrics.json``: name the
    ``points.csv`` files found there instead (a committed study) and the option that reads them."""
    where = ", ".join(repr(str(d)) for d in dirs)
    tables = sorted(str(p) for d in dirs for p in Path(d).rglob(POINTS_FILE))
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise ScalingError(f"no run (metrics.json) below {where}, but {len(tables)} {POINTS_FILE} written by "
                           f"genarena-scaling: {shown}; re-plot one with --points {tables[0]}")
    raise ScalingError(f"no run (metrics.json) below {where}; pass the directory of a sweep's runs "
                       "(--runs runs/<experiment>), a points.csv (--points) or a W&B group (--source wandb)")


def _cell(column: str, text: str) -> Any:
    """A points.csv cell as the value :func:`write_points` wrote: None, bool, int, float or str."""
    if text == "":
        return None
    if column in TEXT_COLUMNS:
        return text
    if column in BOOL_COLUMNS and text in ("True", "False"):
        return text == "True"
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def write_points(runs: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """One row per run with the :data:`POINT_COLUMNS` (empty cell: no value)."""
    with Path(path).open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(POINT_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in POINT_COLUMNS})


def points_file(path: str | Path) -> Path:
    """``path`` itself, or the ``points.csv`` inside a directory; :class:`ScalingError` when neither exists."""
    path = Path(path)
    if path.is_dir() and (path / POINTS_FILE).is_file():
        return path / POINTS_FILE
    if not path.is_file():
        raise ScalingError(f"points file {str(path)!r} does not exist"
                           + (f" (a directory without {POINTS_FILE})" if path.is_dir() else ""))
    return path


def read_points(paths: Sequence[str | Path], *, sweep: str | None = None, data: str | None = None,
                keep: str = "newest") -> Collection:
    """The runs of ``points.csv`` files (as :func:`write_points` wrote them; columns it does not know are
    read too; a directory stands for its points.csv), filtered and reduced like :func:`collect_local`."""
    if not paths:
        raise ScalingError("no points file given (e.g. --points experiments/scaling/<study>/points.csv)")
    rows: list[tuple[str, dict[str, Any]]] = []
    for path in map(points_file, paths):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if "paradigm" not in (reader.fieldnames or []):
                raise ScalingError(f"{path} is not a {POINTS_FILE} written by genarena-scaling "
                                   f"(no 'paradigm' column; columns: {', '.join(reader.fieldnames or []) or 'none'})")
            for i, line in enumerate(reader):
                m = {k: _cell(k, v or "") for k, v in line.items() if k is not None}
                m.setdefault("run", None)
                m.setdefault("time", None)
                m.update(task="generator", status="finished")
                if m["run"] is None:
                    m["run"] = f"{path}:{i + 2}"
                rows.append((f"{path}:{i + 2}", m))
    col = _status_filter(rows, sweep, data, source=", ".join(str(p) for p in paths))
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
            import wandb  # lazy: only --source wandb needs it (and it takes a second to import)
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

"""A reader of W&B's offline run files (``<run dir>/wandb/offline-run-*/run-<id>.wandb``) for the tests.

wandb has no public reader of these files. A file is a LevelDB-style log: a 7-byte header (``:W&B``, the
2-byte magic 0xBEE1 and a 1-byte version, little-endian), then 32 KiB blocks of records. Each record is a
7-byte header (checksum uint32, length uint16, type uint8: FULL 1, FIRST 2, MIDDLE 3, LAST 4) and its
payload; a record never straddles a block end (FIRST / MIDDLE / LAST pieces do), and a block tail shorter
than a header is zero padding. The checksum is the CRC-32 of the type byte followed by the payload. A whole
payload is a serialized ``wandb.proto.wandb_internal_pb2.Record`` (run, config, history, summary, files,
...). :class:`WandbRun` gathers what a run file says about its run.
"""

from __future__ import annotations

import json
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = struct.Struct("<4sHB")  # ident, magic, version
RECORD_HEADER = struct.Struct("<IHB")  # checksum, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: str | Path) -> Iterator[bytes]:
    """The whole payloads of a ``.wandb`` file, in order; a bad header or checksum raises ``ValueError``."""
    data = Path(path).read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path}: not a W&B run file (header {ident!r} {magic:#x} v{version})")
    pos, pieces = HEADER.size, []
    while pos + RECORD_HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER.size:  # the block's zero-padded tail
            pos += left
            continue
        checksum, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding (a file that was cut short, or a preallocated tail)
            pos += left
            continue
        start = pos + RECORD_HEADER.size
        body = data[start:start + length]
        if len(body) < length:
            break  # a partial record at the end of a file still being written
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: checksum mismatch at byte {pos}")
        pos = start + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pieces = [body]
        elif kind == MIDDLE:
            pieces.append(body)
        elif kind == LAST:
            yield b"".join([*pieces, body])
            pieces = []
        else:
            raise ValueError(f"{path}: unknown record type {kind} at byte {pos}")


def records(path: str | Path) -> Iterator[pb.Record]:
    """The ``Record`` messages of a ``.wandb`` file."""
    for body in payloads(path):
        rec = pb.Record()
        rec.ParseFromString(body)
        yield rec


def _value(item: Any) -> Any:
    """A history / summary / config item's value (JSON-encoded in the file)."""
    return json.loads(item.value_json)


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class WandbRun:
    """What one ``.wandb`` file says about its run: identity, config, history rows, summary, files, artifacts."""

    path: Path
    finished: bool = False  # the file ends with the run's exit record
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    resumed: bool = False
    start_step: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # define_metric: name -> its options
    files: list[str] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path, timeout: float = 30.0) -> WandbRun:
        """The run of a finished W&B process: W&B's service writes the file's last blocks shortly after
        ``finish()`` returns, so this waits (up to ``timeout`` seconds) for the run's exit record."""
        deadline = time.monotonic() + timeout
        while True:
            recs = list(records(path))
            if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        run = cls(Path(path))
        for rec in recs:
            kind = rec.WhichOneof("record_type")
            if kind == "run":  # the run's identity; a later run record (an update) may carry only part of it
                r = rec.run
                for attr, value in (("run_id", r.run_id), ("project", r.project), ("group", r.run_group),
                                    ("job_type", r.job_type), ("name", r.display_name), ("tags", list(r.tags)),
                                    ("start_step", r.starting_step)):
                    if value:
                        setattr(run, attr, value)
                run.resumed = run.resumed or r.resumed
                for item in r.config.update:
                    run.config[_key(item)] = _value(item)
            elif kind == "config":
                for item in rec.config.update:
                    run.config[_key(item)] = _value(item)
            elif kind == "history":
                run.history.append({_key(item): _value(item) for item in rec.history.item})
            elif kind == "summary":
                for item in rec.summary.update:
                    run.summary[_key(item)] = _value(item)
                for item in rec.summary.remove:
                    run.summary.pop(_key(item), None)
            elif kind == "metric":
                m = rec.metric
                name = m.name or m.glob_name
                run.metrics[name] = {"step_metric": m.step_metric, "step_sync": m.options.step_sync,
                                     "hidden": m.options.hidden,
                                     "summary": sorted(f.name for f, on in m.summary.ListFields() if on)}
            elif kind == "files":
                run.files += [f.path for f in rec.files.files]
            elif kind == "exit":
                run.finished = True
            elif kind == "artifact":
                a = rec.artifact
                run.artifacts.append({"name": a.name, "type": a.type, "aliases": list(a.aliases),
                                      "files": [e.path for e in a.manifest.contents]})
        return run

    def values(self, key: str) -> list[Any]:
        """``key``'s value in every history row that has it, in order."""
        return [row[key] for row in self.history if key in row]

    @property
    def config_values(self) -> dict[str, Any]:
        """The config without W&B's ``{"value": ...}`` wrapping."""
        return {k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v for k, v in self.config.items()}


RUN_FOLDER = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-[A-Za-z0-9]+$")  # not W&B's ``latest-run`` link


def run_files(directory: str | Path) -> list[Path]:
    """Every ``.wandb`` file in ``<directory>/wandb/`` (one per W&B process that logged there), oldest first."""
    folders = [d for d in (Path(directory) / "wandb").glob("*run-*") if RUN_FOLDER.match(d.name)]
    return [f for d in sorted(folders, key=lambda d: RUN_FOLDER.match(d.name).group(1)) for f in d.glob("run-*.wandb")]


def read_runs(directory: str | Path) -> list[WandbRun]:
    """What each ``.wandb`` file in ``<directory>/wandb/`` holds, oldest first."""
    return [WandbRun.read(p) for p in run_files(directory)]


def read_table(run: WandbRun, key: str) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows of the ``wandb.Table`` logged as ``key`` (its JSON file beside the run file)."""
    [row] = [r for r in run.history if f"{key}/_type" in r]
    assert row[f"{key}/_type"] == "table-file", row
    table = json.loads((run.path.parent / "files" / row[f"{key}/path"]).read_text())
    return table["columns"], table["data"]


def logged_image(run: WandbRun, key: str) -> Path:
    """The file of the image logged as ``key`` (the last one)."""
    rows = [r for r in run.history if f"{key}/_type" in r]
    assert rows and rows[-1][f"{key}/_type"] == "image-file", rows
    return run.path.parent / "files" / rows[-1][f"{key}/path"]

"""Strict state-dict conversion shared by the converters: a key plan, one error naming every bad key.

A converter writes a *plan*: for each key the official state dict must hold, its shape and the genarena
keys it becomes (several when an official tensor is split along dim 0, none when it is checked and
dropped). :func:`apply_plan` checks the whole state dict against the plan first and raises one
:class:`~genarena.errors.CheckpointError` naming the missing, unexpected and mis-shaped keys; only then
does it convert.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from genarena.checkpoints import load_file
from genarena.errors import CheckpointError

MAX_LISTED = 12  # keys named per category before "... and N more"


@dataclass(frozen=True)
class Entry:
    """One official key: its ``shape`` and the genarena keys it becomes (split evenly along dim 0)."""

    shape: tuple[int, ...]
    targets: tuple[str, ...]


Plan = dict[str, Entry]


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED])
    return shown + (f", ... and {len(keys) - MAX_LISTED} more" if len(keys) > MAX_LISTED else "")


def mismatch_error(source: str, missing: list[str], unexpected: list[str], misshaped: list[str]) -> CheckpointError:
    """One line naming every missing, unexpected and mis-shaped key of a ``source`` state dict."""
    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {_listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
    if misshaped:
        parts.append(f"mis-shaped keys ({len(misshaped)}): {_listed(misshaped)}")
    return CheckpointError(f"not a {source} state dict: " + "; ".join(parts))


def require(source: str, state_dict: Mapping[str, Tensor], keys: list[str]) -> None:
    """Raise the one-line error if any of ``keys`` (needed to read the architecture) is absent."""
    missing = [k for k in keys if k not in state_dict]
    if missing:
        raise mismatch_error(source, missing, [], [])


def apply_plan(source: str, state_dict: Mapping[str, Tensor], plan: Plan) -> dict[str, Tensor]:
    """Check ``state_dict`` against ``plan`` (every key, every shape) and convert it to genarena keys."""
    missing = [k for k in plan if k not in state_dict]
    unexpected = [k for k in state_dict if k not in plan]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} != {e.shape}" for k, e in plan.items()
                 if k in state_dict and tuple(state_dict[k].shape) != e.shape]
    if missing or unexpected or misshaped:
        raise mismatch_error(source, missing, unexpected, misshaped)
    out: dict[str, Tensor] = {}
    for key, entry in plan.items():
        if len(entry.targets) == 1:
            out[entry.targets[0]] = state_dict[key]
        elif entry.targets:
            out.update(zip(entry.targets, state_dict[key].chunk(len(entry.targets), dim=0)))
    return out


def prefixed(prefix: str, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


def load_released(path: str | Path, source: str, weights_key: str | None) -> dict[str, Tensor]:
    """Read a released checkpoint with ``torch.load(weights_only=True)`` and return its state dict.

    ``weights_key``: the entry holding the weights (``"model"`` for MAR's and LlamaGen's files), or None for
    a file that is the state dict itself. Training checkpoints that also pickled their ``argparse``
    arguments load too (``Namespace`` is allowed as a plain container; nothing else is executed).
    """
    p = Path(path).expanduser()
    obj = load_file(p, what=f"{source} checkpoint", extra_globals=(argparse.Namespace,))
    if weights_key is not None:
        if not isinstance(obj, dict) or weights_key not in obj:
            keys = list(obj)[:MAX_LISTED] if isinstance(obj, dict) else type(obj).__name__
            raise CheckpointError(f"{source} checkpoint {p} has no '{weights_key}' entry (found: {keys})")
        obj = obj[weights_key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} checkpoint {p} does not hold a state dict of tensors")
    return obj

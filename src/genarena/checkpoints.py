"""Finding and reading checkpoints with clear errors (a run directory or a ``.ckpt`` file)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from genarena.config import CHECKPOINT_SELECTIONS, check_choice
from genarena.errors import CheckpointError

log = logging.getLogger("genarena")


def resolve_checkpoint(path: str | Path, select: str = "last") -> Path:
    """A checkpoint file as given, or one of a run directory's checkpoints chosen by ``select``.

    ``last``: ``checkpoints/last.ckpt``, the weights at the end of training. ``best``: ``checkpoints/best.ckpt``,
    the weights with the lowest ``val/loss`` (early stopping; a generator that overfits its data is judged at
    its best); a run that never saved one (no validation) gives its ``last.ckpt``, with a log line saying so.
    """
    check_choice("checkpoint", select, CHECKPOINT_SELECTIONS)
    p = Path(path).expanduser()
    if p.is_dir():
        last = p / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise CheckpointError(f"run directory {p} has no checkpoints/last.ckpt (did that run finish?)")
        best = p / "checkpoints" / "best.ckpt"
        if select == "best":
            if best.is_file():
                return best
            log.warning("run directory %s has no checkpoints/best.ckpt (no validation loss); using last.ckpt", p)
        return last
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def read_checkpoint(path: str | Path, expected_role: str | None = None) -> dict[str, Any]:
    """Load a genarena checkpoint; ``expected_role`` (tokenizer / generator / classifier) is checked."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated zip, pickle garbage, wrong format...
        raise CheckpointError(
            f"checkpoint {p} is corrupt or not a PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"checkpoint {p} is not a genarena checkpoint (no state_dict / hyper_parameters)")
    role = ckpt["hyper_parameters"].get("role")
    if expected_role is not None and role != expected_role:
        raise CheckpointError(f"checkpoint {p} holds a {role!r}, but a {expected_role!r} checkpoint is needed here")
    ckpt["path"] = str(p)
    return ckpt


def sub_state_dict(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Entries under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in state_dict.items() if k.startswith(prefix + ".")}


def checkpoint_step(path: str | Path) -> int:
    """The ``global_step`` a Lightning checkpoint was saved at (memory-mapped: the weights are not read); -1 when
    the file cannot be read."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt.get("global_step", -1))
    except Exception:  # a half-written file of a killed run, or not a checkpoint
        return -1


def resume_checkpoints(run_dir: str | Path) -> list[Path]:
    """The checkpoints of a run directory a resumed run can continue from: the periodic ``checkpoints/step*.ckpt``,
    ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt`` (``best.ckpt`` is an earlier state)."""
    run_dir = Path(run_dir)
    ckpts = run_dir / "checkpoints"
    found = list(ckpts.glob("step*.ckpt")) + list(ckpts.glob("last.ckpt")) + list(run_dir.glob("hpc_ckpt_*.ckpt"))
    return [p for p in found if p.is_file()]


def newest_resume_checkpoint(run_dir: str | Path) -> Path | None:
    """The resume checkpoint of ``run_dir`` with the highest step (the newest file on a tie); None without one."""
    scored = [(checkpoint_step(p), p.stat().st_mtime, p) for p in resume_checkpoints(run_dir)]
    scored = [s for s in scored if s[0] >= 0]
    return max(scored)[2] if scored else None

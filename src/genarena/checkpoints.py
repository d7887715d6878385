"""Finding and reading checkpoints with clear errors (a run directory or a ``.ckpt`` file), safely.

Every file is read with ``torch.load(..., weights_only=True)``: tensors, numbers, strings and plain
containers only, so a crafted file cannot run code when it is loaded. genarena's own checkpoints (Lightning's
plus the module's hyperparameters, all plain containers) need nothing beyond that: :data:`SAFE_GLOBALS`, the
explicit allow-list, is empty. A file that pickles anything else is refused with a message saying so;
``allow_unsafe_load=true`` loads a trusted old file with full unpickling.

A run directory's ``metrics.json`` is consulted first: the checkpoints of a run whose status is ``failed``
(a diverged or crashed run) are refused, naming the status and the error.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from genarena.config import CHECKPOINT_SELECTIONS, check_choice
from genarena.errors import CheckpointError
from genarena.runs import read_metrics

log = logging.getLogger("genarena")

# classes genarena's checkpoints need beyond torch's weights-only defaults (tests/test_bad_inputs.py pins that every
# checkpoint a run writes loads without any): none
SAFE_GLOBALS: tuple[Any, ...] = ()
UNSAFE_HINT = "pass allow_unsafe_load=true only if you trust the file (loading it can run arbitrary code)"


def _unsafe_global(error: Exception) -> str | None:
    """The global a weights-only load refused (``argparse.Namespace``), or None when the file is no pickle it could
    parse at all."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def load_file(path: str | Path, *, allow_unsafe: bool = False, what: str = "checkpoint",
              extra_globals: tuple[Any, ...] = ()) -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True`` (allowing :data:`SAFE_GLOBALS` and
    ``extra_globals``, e.g. ``argparse.Namespace`` in released training checkpoints); :class:`CheckpointError` for a
    missing, corrupt or truncated file, or one that needs unsafe unpickling (loaded only with ``allow_unsafe``)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{what} {p} does not exist")
    try:
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_globals]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        needs = _unsafe_global(e)
        if not allow_unsafe:
            if needs is not None:
                raise CheckpointError(f"{what} {p} needs unsafe loading: it pickles {needs}, which weights-only "
                                      f"loading refuses; {UNSAFE_HINT}") from None
            raise CheckpointError(f"{what} {p} cannot be read with weights_only=True: corrupt or not a PyTorch "
                                  f"checkpoint (not a pickle it can parse); if it is a trusted old file, "
                                  f"{UNSAFE_HINT}") from None
    except Exception as e:  # truncated zip, empty file, wrong format...
        reason = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else "empty or truncated"
        raise CheckpointError(f"{what} {p} cannot be read with weights_only=True: corrupt, truncated or not a PyTorch "
                              f"checkpoint ({type(e).__name__}: {reason})") from None
    log.warning("allow_unsafe_load=true: loading %s with full unpickling (%s)", p,
                f"it pickles {needs}" if needs else "weights-only loading cannot read it")
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"{what} {p} cannot be read: corrupt or not a PyTorch checkpoint ({type(e).__name__}: "
                              f"{e})") from None


def check_run_usable(run_dir: Path) -> None:
    """:class:`CheckpointError` when ``run_dir``'s ``metrics.json`` says the run failed (its status and error)."""
    m = read_metrics(run_dir) if (run_dir / "metrics.json").is_file() else {}
    if m.get("status") == "failed":
        raise CheckpointError(f"run {run_dir} failed ({m.get('error') or 'no error recorded'}); its checkpoints are "
                              "not used: fix the cause and train it again")


def resolve_checkpoint(path: str | Path, select: str = "last") -> Path:
    """A checkpoint file as given, or one of a run directory's checkpoints chosen by ``select``.

    ``last``: ``checkpoints/last.ckpt``, the weights at the end of training. ``best``: ``checkpoints/best.ckpt``,
    the weights with the lowest ``val/loss`` (early stopping; a generator that overfits its data is judged at
    its best); a run that never saved one (no validation) gives its ``last.ckpt``, with a log line saying so.
    A failed run (its ``metrics.json``), or a checkpoint inside one, is refused.
    """
    check_choice("checkpoint", select, CHECKPOINT_SELECTIONS)
    p = Path(path).expanduser()
    if p.is_dir():
        check_run_usable(p)
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
    if p.parent.name == "checkpoints":
        check_run_usable(p.parent.parent)
    return p


def read_checkpoint(path: str | Path, expected_role: str | None = None, *,
                    allow_unsafe: bool = False) -> dict[str, Any]:
    """Load a genarena checkpoint safely (``weights_only=True``; ``allow_unsafe`` for a trusted old file that needs
    more); ``expected_role`` (tokenizer / generator / classifier) is checked."""
    p = resolve_checkpoint(path)
    ckpt = load_file(p, allow_unsafe=allow_unsafe)
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

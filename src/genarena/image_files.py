"""Images on disk: sample files (``.npz`` + PNG grid), folders of PNGs, and grids of rows.

Layouts: in memory, images are uint8 ``(N, C, H, W)``; an ``.npz`` holds ``images`` uint8
``(N, H, W, C)`` and optional ``labels`` ``(N,)``; a grid PNG has one row of images per tensor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.utils import save_image

from genarena.errors import DataError


def save_rows(rows: list[Tensor], path: Path) -> Path:
    """Save rows of images ``[(n, C, H, W)]`` in ``[-1, 1]`` as one PNG grid (one row per tensor)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = max(len(r) for r in rows)
    grid = torch.cat([r.detach().float().cpu() for r in rows])
    save_image((grid + 1) / 2, str(path), nrow=n, padding=1, pad_value=0.5)
    return path


def save_samples(out: Path, images: Tensor, labels: Tensor, num_classes: int, meta: dict[str, Any],
                 fmt: str = "genarena") -> None:
    """``grid.png`` (rows by label), ``samples.npz`` and ``meta.json`` in ``out``. ``samples.npz`` holds
    ``images`` (uint8 N x H x W x C) and ``labels`` (``fmt="genarena"``), or ADM's evaluator layout
    ``arr_0`` (uint8 N x H x W x 3, gray images repeated) and ``arr_1`` (labels) (``fmt="adm"``)."""
    out.mkdir(parents=True, exist_ok=True)
    nhwc = images.permute(0, 2, 3, 1).numpy()
    if fmt == "adm":
        np.savez(out / "samples.npz", arr_0=np.repeat(nhwc, 3 // nhwc.shape[-1], axis=-1), arr_1=labels.numpy())
    else:
        np.savez_compressed(out / "samples.npz", images=nhwc, labels=labels.numpy())
    rows = [images[labels == c] for c in range(num_classes) if (labels == c).any()]
    per_row = max(len(r) for r in rows)
    if per_row > 32 or len(rows) == 1:  # unbalanced: plain rows of 16
        rows = list(images.split(16))
    save_rows([r.float() / 127.5 - 1 for r in rows], out / "grid.png")
    (out / "meta.json").write_text(json.dumps(meta, indent=2))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # the image files of a folder given as images=


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """``images`` and optional ``labels`` of an .npz (no pickled objects), or ADM's ``arr_0`` / ``arr_1`` (the third
    value says which layout); :class:`DataError` for anything else."""
    try:
        with np.load(p, allow_pickle=False) as f:
            files = list(f.files)
            key, label_key = ("images", "labels") if "images" in files else ("arr_0", "arr_1")
            if key not in files:
                raise DataError(f"images={p}: the .npz has no 'images' (or ADM 'arr_0') array "
                                f"(found {', '.join(files) or 'nothing'})")
            return f[key], f[label_key] if label_key in files else None, key == "arr_0"
    except DataError:
        raise
    except Exception as e:  # not a zip, truncated, corrupt members, object arrays (pickle)...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "empty or truncated"
        raise DataError(f"images={p} is not a readable .npz ({type(e).__name__}: {reason})") from None


def _read_image(path: Path, mode: str) -> np.ndarray:
    from PIL import Image  # lazy: only folders of images need it

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except Exception as e:  # PIL: unidentified, truncated or corrupt files
        raise DataError(f"images: {path} is not a readable image ({type(e).__name__}: {e})") from None


def load_images(path: str | Path, channels: int) -> tuple[Tensor, Tensor | None]:
    """uint8 ``(N, C, H, W)`` and labels ``(N,)`` (or None) from an .npz (``images`` [+ ``labels``], or ADM's
    ``arr_0`` [+ ``arr_1``], whose 3 equal channels become ``channels``) or a folder of PNG / JPEG files; a file
    that cannot be read is one :class:`DataError` naming it."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        images, labels, adm = _read_npz(p)
        if images.ndim == 3:
            images = images[..., None]
        if adm and images.ndim == 4 and images.shape[-1] == 3 and channels == 1:
            images = images[..., :1]  # ADM stores gray images as three equal channels
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
            raise DataError(f"images={p}: expected uint8 (N, H, W, C) with N >= 1 and C = 1 or 3, got {images.dtype} "
                            f"{images.shape}")
        if labels is not None and (labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer)):
            raise DataError(f"images={p}: 'labels' must be {len(images)} integers, got {labels.dtype} {labels.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return x, None if labels is None else torch.as_tensor(labels).long()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"images={p}: no .png / .jpg files in that folder")
        mode = "L" if channels == 1 else "RGB"
        arrays = [_read_image(f, mode) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"images={p}: the images differ in size ({sorted(shapes)[:3]} ...)")
        x = torch.from_numpy(np.stack(arrays))
        return (x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous(), None
    raise DataError(f"images={p} is neither an .npz file nor a folder of PNG / JPEG images")

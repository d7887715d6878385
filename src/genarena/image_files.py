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


def load_images(path: str | Path, channels: int) -> tuple[Tensor, Tensor | None]:
    """uint8 ``(N, C, H, W)`` and labels ``(N,)`` (or None) from an .npz (``images`` [+ ``labels``], or ADM's
    ``arr_0`` [+ ``arr_1``]) or a folder of PNGs; an ADM file's 3 equal channels become ``channels``."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as f:
                files = list(f.files)
                key, label_key = ("images", "labels") if "images" in files else ("arr_0", "arr_1")
                images = f[key] if key in files else None
                labels = f[label_key] if label_key in files else None
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"images={p} is not a readable .npz ({type(e).__name__}: {e})") from None
        if images is None:
            raise DataError(f"images={p}: the .npz has no 'images' (or ADM 'arr_0') array "
                            f"(found {', '.join(files) or 'nothing'})")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim == 4 and images.shape[-1] == 3 and channels == 1 and key == "arr_0":
            images = images[..., :1]  # ADM stores gray images as three equal channels
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"images={p}: expected uint8 (N, H, W, C), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return x, None if labels is None else torch.as_tensor(labels).long()
    if p.is_dir():
        from PIL import Image  # lazy: only folders of PNGs need it

        files = sorted(p.glob("*.png"))
        if not files:
            raise DataError(f"images={p}: no .png files in that folder")
        mode = "L" if channels == 1 else "RGB"
        arrays = [np.asarray(Image.open(f).convert(mode)) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise DataError(f"images={p}: the PNGs differ in size ({sorted(shapes)[:3]} ...)")
        x = torch.from_numpy(np.stack(arrays))
        return (x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)).contiguous(), None
    raise DataError(f"images={p} is neither an .npz file nor a folder of PNGs")

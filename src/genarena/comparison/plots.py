"""The comparison's figures: samples side by side (``samples.png``) and quality vs sampling time
(``frontier.png``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402


def class_grid(images: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` -> one image ``(C, rows*H, per_class*W)`` with a row per class."""
    rows = []
    c, h, w = images.shape[1:]
    for k in labels.unique(sorted=True).tolist():
        row = images[labels == k][:per_class]
        if len(row) < per_class:
            row = torch.cat([row, row.new_zeros(per_class - len(row), c, h, w)])
        rows.append(torch.cat(list(row), dim=2))
    return torch.cat(rows, dim=1)


def save_sample_panels(panels: dict[str, torch.Tensor], path: Path) -> None:
    """Grids ``{title: uint8 (C, H, W)}`` side by side in one PNG, titles above each panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.3), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels.items()):
        arr = img.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=10, pad=6)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated in (lower x, lower y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def save_frontier(rows: list[dict[str, Any]], refs: list[dict[str, Any]], path: Path, extractor: str, n: int) -> None:
    """FID and class accuracy vs sampling seconds per image (log x); the FID Pareto frontier as a line and the
    reference rows (real images, tokenizer reconstructions) as labelled horizontal lines. Rows over several
    training seeds carry error bars (sample std over seeds, ``<key>_std``)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = [(r["sample_s_per_image"], r["fid"]) for r in rows]
    for i, r in enumerate(rows):
        x = r["sample_s_per_image"]
        label = r["paradigm"] + (f" ({r['seeds']} seeds)" if (r.get("seeds") or 1) > 1 else "")
        for ax, key in ((ax1, "fid"), (ax2, "class_acc")):
            ax.errorbar(x, r[key], yerr=r.get(f"{key}_std") or 0.0, xerr=r.get("sample_s_per_image_std") or 0.0,
                        fmt="o", ms=7, capsize=3, color=f"C{i % 10}", zorder=3)
            ax.annotate(label, (x, r[key]), textcoords="offset points", xytext=(6, 4))
    front = pareto_front(pts)
    if len(front) > 1:
        ax1.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto frontier")
    for i, ref in enumerate(refs):
        ax1.axhline(ref["fid"], lw=0.9, ls=":", color=f"C{(i + len(rows)) % 10}", label=f"{ref['paradigm']} (floor)")
    ax1.set_xscale("log")
    ax1.set_xlabel("sampling time (s / image)")
    ax1.set_ylabel(f"FID ({extractor} features, N={n}; lower is better)")
    ax1.set_title("quality vs sampling time")
    if len(front) > 1 or refs:
        ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    ax2.set_xscale("log")
    ax2.set_xlabel("sampling time (s / image)")
    ax2.set_ylabel("class accuracy of samples")
    ax2.set_title("class accuracy vs sampling time")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)

"""Zero-shot editing for every paradigm: in-painting, out-painting and class relabelling through
:meth:`Generator.complete` (what ``genarena-edit``, the compare report's editing table and
``benchmarks/editing.py`` share).

A mask spec names the region to **generate**; the rest of the image is kept:

- ``center``: the middle half of each side (``[W/4, 3W/4) x [H/4, 3H/4)``), in-painting;
- ``left`` / ``right`` / ``top`` / ``bottom``: that half of the image, out-painting;
- ``box:x0,y0,x1,y1``: the pixel box ``[x0, x1) x [y0, y1)`` (in Hydra, quote it: ``mask='box:4,4,12,12'``);
- a path to a PNG of the images' size: its white pixels (> 127) are generated, its black ones kept.

The pixel mask becomes the token-grid mask ``known (h, w)`` that ``complete`` takes: a token is known only when
every pixel under it is known (a token a hole touches is generated). Images are encoded with the run's tokenizer,
completed under their own labels (or all under one other class: relabelling), decoded, and optionally pasted
(the known pixels taken from the original). Layouts: uint8 images ``(N, C, H, W)``, pixel masks ``(H, W)``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from genarena.data import ImageDataModule
from genarena.data.sources import balanced_subset
from genarena.errors import ConfigError, DataError
from genarena.generators import Generator
from genarena.generators.generate import to_uint8
from genarena.image_files import load_images, save_rows
from genarena.metrics.fidelity import Evaluator
from genarena.tokenizers import Tokenizer

HALVES = ("left", "right", "top", "bottom")
MASK_FORMS = ("center, left, right, top, bottom, 'box:x0,y0,x1,y1' (pixels, x1 and y1 exclusive) or a mask PNG "
              "(white: generate)")
# the compare report's and the benchmark's two tasks: the mask spec each one edits with
EDIT_TASKS = {"inpaint": "center", "outpaint": "right"}
GRID_PER_ROW = 16  # images per row of the editing grid
MASKED_GRAY = 128  # the generated region in the "masked" row of the grid


# ------------------------------------------------------------------------------------ mask specs
def _box(spec: str) -> tuple[int, int, int, int]:
    """``box:x0,y0,x1,y1`` -> the four ints, or :class:`ConfigError`."""
    try:
        x0, y0, x1, y1 = (int(v) for v in spec[len("box:"):].split(","))
    except ValueError:
        raise ConfigError(f"mask={spec!r} is not accepted; a box is 'box:x0,y0,x1,y1' with four integer pixel "
                          f"coordinates (mask forms: {MASK_FORMS})") from None
    return x0, y0, x1, y1


def check_mask_spec(spec: str) -> None:
    """The spec's form, before any image is seen: a shape name, a well-formed box, or an existing PNG file."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"mask={spec!r} is not accepted; give one of {MASK_FORMS}")
    if spec in (*HALVES, "center"):
        return
    if spec.startswith("box:"):
        _box(spec)
        return
    path = Path(spec).expanduser()
    if path.suffix.lower() != ".png" or not path.is_file():
        raise ConfigError(f"mask={spec!r} is not accepted (no such shape{', PNG file' if path.suffix else ''}); "
                          f"give one of {MASK_FORMS}")


def pixel_mask(spec: str, size: tuple[int, int]) -> Tensor:
    """Known pixels ``(H, W)`` bool (True: keep) of ``spec`` for images of ``size = (H, W)``; a spec that does not
    fit the images (a box outside them, a PNG of another size, nothing to generate) is a :class:`ConfigError`."""
    check_mask_spec(spec)
    h, w = size
    generate = torch.zeros(h, w, dtype=torch.bool)
    if spec == "center":
        generate[h // 4: h - h // 4, w // 4: w - w // 4] = True
    elif spec in HALVES:
        region = {"left": (slice(None), slice(0, w // 2)), "right": (slice(None), slice(w - w // 2, w)),
                  "top": (slice(0, h // 2), slice(None)), "bottom": (slice(h - h // 2, h), slice(None))}[spec]
        generate[region] = True
    elif spec.startswith("box:"):
        x0, y0, x1, y1 = _box(spec)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ConfigError(f"mask={spec!r} does not fit the {w}x{h} images; a box needs 0 <= x0 < x1 <= {w} and "
                              f"0 <= y0 < y1 <= {h} (mask forms: {MASK_FORMS})")
        generate[y0:y1, x0:x1] = True
    else:
        from PIL import Image  # lazy: only mask files need PIL

        try:
            with Image.open(Path(spec).expanduser()) as im:
                mask = np.asarray(im.convert("L"))
        except Exception as e:  # PIL: unidentified, truncated or corrupt files
            raise DataError(f"mask={spec}: not a readable image ({type(e).__name__}: {e})") from None
        if mask.shape != (h, w):
            raise ConfigError(f"mask={spec} is {mask.shape[1]}x{mask.shape[0]} pixels but the images are {w}x{h}; "
                              "a mask PNG has the images' size (white: generate, black: keep)")
        generate = torch.from_numpy(mask > 127)
    if not generate.any():
        raise ConfigError(f"mask={spec!r} marks no pixel to generate; nothing would change (mask forms: {MASK_FORMS})")
    return ~generate


def token_mask(known_pixels: Tensor, grid: tuple[int, int], spec: str = "mask") -> Tensor:
    """Known tokens ``(h, w)`` bool of known pixels ``(H, W)`` on a token ``grid``: a token is known only when all
    its pixels are. A mask that leaves no token known is a :class:`ConfigError` (that is plain sampling)."""
    (big_h, big_w), (h, w) = known_pixels.shape, grid
    if big_h % h or big_w % w:
        raise ConfigError(f"mask={spec!r}: {big_w}x{big_h} images do not divide into the {w}x{h} token grid")
    known = known_pixels.view(h, big_h // h, w, big_w // w).all(3).all(1)
    if not known.any():
        raise ConfigError(f"mask={spec!r} leaves no token of the {w}x{h} grid known (a token is known only when all "
                          "its pixels are): that is plain sampling, `genarena-sample`; choose a smaller region")
    return known


def mask_tag(spec: str) -> str:
    """A folder-name form of a mask spec: ``box:4,4,12,12`` -> ``box4-4-12-12``, a PNG -> its stem."""
    name = Path(spec).stem if spec.lower().endswith(".png") else spec.replace(":", "")
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "mask"


# ------------------------------------------------------------------------------------ images
def load_edit_images(source: str, data_cfg: DictConfig, n: int) -> tuple[Tensor, Tensor | None]:
    """``n`` images to edit, uint8 ``(n, C, H, W)``, and their labels (None when the source has none): ``val``
    (the data's validation split, class-balanced: held-out digits), an ``.npz`` (``images`` [+ ``labels``]) or a
    folder of PNGs (the first ``n`` of either). They must have the data's size and channels."""
    if source == "val":
        images, labels = ImageDataModule(data_cfg).real_images_uint8("val")
        if n > len(images):
            raise ConfigError(f"n={n} but the {data_cfg.name} validation split holds {len(images)} images")
        keep = balanced_subset(labels, n)
        return images[keep], labels[keep]
    images, labels = load_images(source, data_cfg.channels)
    if n > len(images):
        raise ConfigError(f"n={n} but images={source} holds {len(images)} images; give 1 <= n <= {len(images)}")
    want = (data_cfg.channels, data_cfg.resolution, data_cfg.resolution)
    if tuple(images.shape[1:]) != want:
        raise DataError(f"images={source} are {tuple(images.shape[1:])} (C, H, W) but the run models {want} "
                        f"({data_cfg.name}); edit images of the run's size")
    return images[:n], None if labels is None else labels[:n]


@dataclass
class Edited:
    """Edited images: ``originals`` and ``completions`` uint8 ``(N, C, H, W)``, the ``labels`` they were completed
    under ``(N,)``, the pixel and token masks (True: kept) and the wall time of encoding, completing and decoding."""

    originals: Tensor
    completions: Tensor
    labels: Tensor
    known_pixels: Tensor  # (H, W)
    known_tokens: Tensor  # (h, w)
    seconds: float

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, len(self.labels))

    def masked(self) -> Tensor:
        """The originals with the generated region gray: uint8 ``(N, C, H, W)``."""
        return self.originals.masked_fill(~self.known_pixels, MASKED_GRAY)

    def grid_rows(self, per_row: int = GRID_PER_ROW) -> list[Tensor]:
        """Rows of images in ``[-1, 1]``: original, masked, completion, for every ``per_row`` images (a short last
        group is padded with gray)."""
        rows = []
        for start in range(0, len(self.labels), per_row):
            for images in (self.originals, self.masked(), self.completions):
                chunk = images[start:start + per_row].float() / 127.5 - 1
                pad = chunk.new_zeros((per_row - len(chunk), *chunk.shape[1:]))
                rows.append(torch.cat([chunk, pad]) if len(self.labels) > per_row else chunk)
        return rows


@torch.no_grad()
def complete_images(generator: Generator, tokenizer: Tokenizer, images: Tensor, labels: Tensor,
                    known_pixels: Tensor, sampling: Mapping[str, Any], seed: int, batch_size: int,
                    device: torch.device | str | None = None, paste: bool = False,
                    progress: bool = False) -> Edited:
    """Encode uint8 ``images (N, C, H, W)``, keep the tokens wholly under ``known_pixels (H, W)``, generate the rest
    under ``labels (N,)`` with the run's ``sampling`` options, decode; ``paste`` takes the known pixels from the
    originals. Batch i draws from ``Generator(seed + i)``, so a fixed seed and batch size give the same images."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator.to(device).eval()
    tokenizer.to(device).eval()
    known_tokens = token_mask(known_pixels, tokenizer.grid)
    out = []
    start = time.perf_counter()
    batches = list(zip(images.split(batch_size), labels.split(batch_size)))
    for i, (x, y) in enumerate(tqdm(batches, desc="editing", disable=not progress, leave=False)):
        g = torch.Generator(device=device).manual_seed(seed + i)
        tokens = tokenizer.encode(x.to(device).float() / 127.5 - 1)
        known = known_tokens.to(device).expand(len(x), -1, -1)
        done = generator.complete(tokens, known, y.to(device), generator=g, **sampling)
        out.append(to_uint8(tokenizer.decode(done)).cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    completions = torch.cat(out) if out else images.clone()
    if paste:
        completions = torch.where(known_pixels, images, completions)
    return Edited(images.cpu(), completions, labels.cpu(), known_pixels, known_tokens.cpu(), seconds)


def save_edits(out: Path, edited: Edited, meta: Mapping[str, Any], source_labels: Tensor | None = None) -> Path:
    """``edits.npz`` (``images``: the completions, N x H x W x C, and ``labels``, so that ``genarena-eval
    images=edits.npz`` scores them; ``originals``; ``known``: the pixel mask; ``known_tokens``; ``source_labels``
    when known), ``grid.png`` (rows: original / masked / completion) and ``meta.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    nhwc = lambda x: x.permute(0, 2, 3, 1).numpy()  # noqa: E731
    arrays = {"images": nhwc(edited.completions), "labels": edited.labels.numpy(),
              "originals": nhwc(edited.originals), "known": edited.known_pixels.numpy(),
              "known_tokens": edited.known_tokens.numpy()}
    if source_labels is not None:
        arrays["source_labels"] = source_labels.numpy()
    np.savez_compressed(out / "edits.npz", **arrays)
    save_rows(edited.grid_rows(), out / "grid.png")
    (out / "meta.json").write_text(json.dumps(dict(meta), indent=2, default=str))
    return out


# ------------------------------------------------------------------------------------ scores
def known_region_mse(images: Tensor, reference: Tensor, known_pixels: Tensor) -> float:
    """Mean squared error over the known pixels of uint8 ``images`` against ``reference`` (both ``(N, C, H, W)``),
    on the ``[-1, 1]`` scale the models work in; NaN when no pixel is known."""
    if not known_pixels.any():
        return float("nan")
    diff = (images.float() - reference.float()) / 127.5
    return float(diff.pow(2).masked_select(known_pixels.expand_as(diff)).mean())


def interior(known_pixels: Tensor, margin: int) -> Tensor:
    """Known pixels ``(H, W)`` at least ``margin + 1`` pixels (in both directions) from every generated one: where
    the decoder's output no longer depends on the hole (its receptive field crosses the mask's edge by about a
    token)."""
    near = torch.nn.functional.max_pool2d((~known_pixels)[None, None].float(), 2 * margin + 1, stride=1,
                                          padding=margin)[0, 0]
    return known_pixels & (near == 0)


def changed_labels(labels: Tensor, num_classes: int) -> Tensor:
    """Another class for every label: ``(y + 1) mod num_classes`` (the benchmark's relabelling)."""
    return (labels + 1) % num_classes


def score_edit_tasks(generator: Generator, tokenizer: Tokenizer, sampling: Mapping[str, Any], images: Tensor,
                     labels: Tensor, evaluator: Evaluator, seed: int, batch_size: int,
                     device: torch.device | str | None = None, relabel: bool = False,
                     num_classes: int | None = None) -> dict[str, Any]:
    """In-painting (``center``) and out-painting (``right``) of uint8 ``images`` under their ``labels``:
    ``<task>_fid`` (against the evaluator's real split, its features), ``<task>_class_acc`` (the domain
    classifier agrees with the label), ``<task>_known_mse`` (error on the known pixels, against the originals),
    ``<task>_interior_mse`` (the same on the known pixels more than a token away from the hole, :func:`interior`)
    and ``<task>_s_per_image``. ``relabel`` adds ``<task>_relabel_class_acc``: the same edits under another class
    (:func:`changed_labels`), judged against that class."""
    out: dict[str, Any] = {}
    for task, spec in EDIT_TASKS.items():
        known = pixel_mask(spec, tuple(images.shape[-2:]))
        edited = complete_images(generator, tokenizer, images, labels, known, sampling, seed, batch_size, device)
        scores = evaluator(edited.completions, labels, metrics=["fid"])
        margin = images.shape[-1] // tokenizer.grid[1]  # one token
        out.update({f"{task}_fid": scores["fid"], f"{task}_class_acc": scores["class_acc"],
                    f"{task}_known_mse": known_region_mse(edited.completions, images, known),
                    f"{task}_interior_mse": known_region_mse(edited.completions, images, interior(known, margin)),
                    f"{task}_s_per_image": edited.seconds_per_image,
                    f"{task}_known_tokens": int(edited.known_tokens.sum())})
        if relabel:
            if num_classes is None:
                raise ValueError("relabel=True needs num_classes")
            other = changed_labels(labels, num_classes)
            moved = complete_images(generator, tokenizer, images, other, known, sampling, seed, batch_size, device)
            out[f"{task}_relabel_class_acc"] = evaluator(moved.completions, other, metrics=[])["class_acc"]
    return out

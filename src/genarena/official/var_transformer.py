"""VAR's transformer (FoundationVision/VAR ``models/var.py``, released as ``var_d{16,20,24,30}.pth``) -> ``var``.

Official layout -> genarena's :class:`~genarena.generators.VAR` with ``k_bias=false``, ``init=official``:

- ``pos_start`` -> ``start_pos``; ``pos_1LC`` -> ``pos_embed``; ``class_emb`` -> ``class_embed``;
  ``lvl_embed``, ``word_embed``: the same names.
- ``blocks.{i}.attn``: ``mat_qkv.weight`` -> ``qkv.weight``, ``q_bias`` / ``v_bias`` the same,
  ``scale_mul_1H11`` -> ``log_scale``, ``proj`` the same; ``zero_k_bias`` (a buffer) must be zero.
- ``blocks.{i}.ffn.fc1`` / ``fc2`` -> ``mlp.0`` / ``mlp.2``; ``blocks.{i}.ada_lin.1`` -> ``ada.1`` (the
  same row order: gates, scales, shifts).
- ``head_nm.ada_lin.1`` -> ``head.ada.1``; ``head`` -> ``head.proj``.
- ``lvl_1L`` (the scale of each position) gives ``patch_nums``; it and ``attn_bias_for_masking`` are dropped.

Depth, width, heads (``scale_mul_1H11``), MLP ratio, vocabulary and classes are read from the shapes;
the drop-path rate is ``build_vae_var``'s rule ``0.1 depth / 24`` (released models: width ``64 depth``,
heads ``depth``). The class count is ``class_embed.weight.shape[0] - 1`` (the last row is the null
class). Models with shared AdaLN (``shared_ada_lin``, VAR-d36) are not supported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genarena.errors import CheckpointError
from genarena.official.presets import generator_preset
from genarena.official.state_dicts import Entry, Plan, apply_plan, load_released, require

SOURCE = "VAR transformer"
# the sampling settings of VAR's reported FIDs (cfg 1.5 ramped over scales, top-k 900, top-p 0.96)
OFFICIAL_SAMPLING = {"cfg": 1.5, "cfg_schedule": "linear", "temperature": 1.0, "top_k": 900, "top_p": 0.96}
OFFICIAL_INIT = {"init_adaln": 0.5, "init_adaln_gamma": 1e-5, "init_head": 0.02}


def build_rule(depth: int) -> dict[str, Any]:
    """``build_vae_var``'s rule: width ``64 depth``, heads ``depth``, drop path ``0.1 depth / 24``."""
    return {"width": 64 * depth, "heads": depth, "drop_path": 0.1 * depth / 24}


def read_patch_nums(levels: Tensor) -> list[int]:
    """The side of each scale from ``lvl_1L`` ``(1, L)``: scale k occupies ``pn_k^2`` consecutive positions."""
    flat = levels.reshape(-1).long()
    counts = torch.bincount(flat).tolist() if flat.numel() else []
    sides = [math.isqrt(int(n)) for n in counts]
    ordered = torch.equal(flat, torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts)))
    if not ordered or any(s * s != n or n == 0 for s, n in zip(sides, counts)):
        raise CheckpointError(f"not a {SOURCE} state dict: lvl_1L does not hold consecutive square scales "
                              f"(positions per scale: {counts})")
    return sides


def convert_var_transformer(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int] | None = None,
                            drop_path: float | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A VAR state dict -> ``(generator config, state dict)`` of genarena's ``var``.

    ``patch_nums``: the tokenizer's scales, checked against the checkpoint's (``lvl_1L``); ``drop_path``:
    the training drop-path rate (default ``build_vae_var``'s rule). The config is ``conf/generator/var.yaml``
    with the official architecture, init and FID sampling settings. Raises
    :class:`~genarena.errors.CheckpointError` naming every missing / unexpected / mis-shaped key.
    """
    if "shared_ada_lin.1.weight" in state_dict:
        raise CheckpointError(f"{SOURCE}: shared AdaLN models (shared_ada_lin, ada_gss; VAR-d36) are not supported")
    require(SOURCE, state_dict, ["class_emb.weight", "pos_1LC", "lvl_1L", "word_embed.weight", "head.weight",
                                 "blocks.0.attn.scale_mul_1H11", "blocks.0.ffn.fc1.weight"])
    depth = 1 + max(int(m.group(1)) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k)))
    classes, width = state_dict["class_emb.weight"].shape
    heads = state_dict["blocks.0.attn.scale_mul_1H11"].shape[1]
    hidden = state_dict["blocks.0.ffn.fc1.weight"].shape[0]
    vocab, token_dim = state_dict["head.weight"].shape[0], state_dict["word_embed.weight"].shape[1]
    length = state_dict["pos_1LC"].shape[1]
    if state_dict["lvl_1L"].numel() != length:
        raise CheckpointError(f"not a {SOURCE} state dict: mis-shaped keys (1): lvl_1L "
                              f"{tuple(state_dict['lvl_1L'].shape)} != (1, {length})")
    scales = read_patch_nums(state_dict["lvl_1L"])
    if patch_nums is not None and list(patch_nums) != scales:
        raise CheckpointError(f"{SOURCE} was trained on scales {scales}, not the tokenizer's patch_nums "
                              f"{list(patch_nums)}")
    c, k = int(width), len(scales)
    plan: Plan = {
        "pos_start": Entry((1, scales[0] ** 2, c), ("start_pos",)),
        "pos_1LC": Entry((1, length, c), ("pos_embed",)),
        "lvl_1L": Entry((1, length), ()),
        "attn_bias_for_masking": Entry((1, 1, length, length), ()),
        "word_embed.weight": Entry((c, token_dim), ("word_embed.weight",)),
        "word_embed.bias": Entry((c,), ("word_embed.bias",)),
        "class_emb.weight": Entry((classes, c), ("class_embed.weight",)),
        "lvl_embed.weight": Entry((k, c), ("lvl_embed.weight",)),
        "head_nm.ada_lin.1.weight": Entry((2 * c, c), ("head.ada.1.weight",)),
        "head_nm.ada_lin.1.bias": Entry((2 * c,), ("head.ada.1.bias",)),
        "head.weight": Entry((vocab, c), ("head.proj.weight",)),
        "head.bias": Entry((vocab,), ("head.proj.bias",)),
    }
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"transformer.blocks.{i}."
        plan.update({
            src + "attn.scale_mul_1H11": Entry((1, heads, 1, 1), (dst + "attn.log_scale",)),
            src + "attn.q_bias": Entry((c,), (dst + "attn.q_bias",)),
            src + "attn.v_bias": Entry((c,), (dst + "attn.v_bias",)),
            src + "attn.zero_k_bias": Entry((c,), ()),
            src + "attn.mat_qkv.weight": Entry((3 * c, c), (dst + "attn.qkv.weight",)),
            src + "attn.proj.weight": Entry((c, c), (dst + "attn.proj.weight",)),
            src + "attn.proj.bias": Entry((c,), (dst + "attn.proj.bias",)),
            src + "ffn.fc1.weight": Entry((hidden, c), (dst + "mlp.0.weight",)),
            src + "ffn.fc1.bias": Entry((hidden,), (dst + "mlp.0.bias",)),
            src + "ffn.fc2.weight": Entry((c, hidden), (dst + "mlp.2.weight",)),
            src + "ffn.fc2.bias": Entry((c,), (dst + "mlp.2.bias",)),
            src + "ada_lin.1.weight": Entry((6 * c, c), (dst + "ada.1.weight",)),
            src + "ada_lin.1.bias": Entry((6 * c,), (dst + "ada.1.bias",)),
        })
    converted = apply_plan(SOURCE, state_dict, plan)
    nonzero = [f"blocks.{i}.attn.zero_k_bias" for i in range(depth) if state_dict[f"blocks.{i}.attn.zero_k_bias"].any()]
    if nonzero:
        raise CheckpointError(f"{SOURCE}: the key bias must be zero (genarena's k_bias=false has none), "
                              f"but {', '.join(nonzero)} is not")
    cfg = generator_preset("var")
    cfg.update(depth=depth, width=c, heads=int(heads), mlp_ratio=hidden / c, qk_norm=True,
               drop_path=build_rule(depth)["drop_path"] if drop_path is None else float(drop_path),
               dropout=0.0, class_dropout=0.1, k_bias=False, init="official", **OFFICIAL_INIT,
               sampling=dict(OFFICIAL_SAMPLING))
    return cfg, converted


def load_official_var_transformer(path: str | Path, patch_nums: Sequence[int] | None = None,
                                  drop_path: float | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``var_d{16,20,24,30}.pth`` (a plain state dict) and convert it (:func:`convert_var_transformer`)."""
    return convert_var_transformer(load_released(path, SOURCE, None), patch_nums, drop_path)


__all__ = ["build_rule", "convert_var_transformer", "load_official_var_transformer"]

"""LlamaGen's class-conditional GPT (FoundationVision/LlamaGen ``autoregressive/models/gpt.py``, released as
``c2i_{B,L,XL}_{256,384}.pt``) -> ``ar`` with ``backbone=llama``.

Official layout -> genarena's :class:`~genarena.generators.RasterAR` (``generators/llama.py``):

- ``cls_embedding.embedding_table`` -> ``class_embed`` (the last row is the null class);
  ``tok_embeddings`` -> ``token_embed``.
- ``layers.{i}.attention.wqkv`` -> ``transformer.blocks.{i}.attn.qkv``, the q and k rows of every head
  permuted from LlamaGen's interleaved RoPE pairs ``(2j, 2j+1)`` to genarena's ``(j, j + D/2)``
  (:func:`rope_pair_permutation`); ``attention.wo`` -> ``attn.proj``.
- ``layers.{i}.feed_forward.w1 / w3 / w2`` -> ``ffn.gate / up / down``; ``attention_norm`` /
  ``ffn_norm`` -> ``norm1`` / ``norm2``; ``norm`` -> ``head.norm``; ``output`` -> ``head.proj``.
- ``freqs_cis`` (stored by some checkpoints; recomputed from the grid) is dropped.

Depth, width, vocabulary and classes come from the shapes. The head count is not stored: it is looked
up from the released sizes (``GPT-B / L / XL / XXL / XXXL``) or passed. The token grid (16x16 for the
``_256`` models, 24x24 for ``_384``) is the tokenizer's. The released files keep the weights under
``model`` (DDP training checkpoints); a plain state dict (FSDP) is read too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genarena.errors import CheckpointError
from genarena.generators.llama import swiglu_hidden
from genarena.official.presets import generator_preset
from genarena.official.state_dicts import Entry, Plan, apply_plan, load_released, require

SOURCE = "LlamaGen GPT"
# GPT_models of gpt.py (class-conditional sizes): name -> (layers, heads, width)
OFFICIAL_SIZES = {"GPT-B": (12, 12, 768), "GPT-L": (24, 16, 1024), "GPT-XL": (36, 20, 1280),
                  "GPT-XXL": (48, 24, 1536), "GPT-XXXL": (48, 40, 2560)}
OFFICIAL_MULTIPLE_OF = 256
# LlamaGen's FID settings (GETTING_STARTED.md): cfg_scale 2.0 (B, L; 1.75 for XL and larger), i.e. w = s - 1,
# constant over tokens, no top-k / top-p, temperature 1
OFFICIAL_CFG_SCALE = {"GPT-B": 2.0, "GPT-L": 2.0}
OFFICIAL_CFG_SCALE_LARGE = 1.75


def rope_pair_permutation(head_dim: int) -> Tensor:
    """Index ``(D,)`` taking a head's dims from LlamaGen's RoPE layout to genarena's: ``new[j] = old[perm[j]]``
    with ``perm = [0, 2, 4, ..., 1, 3, 5, ...]``, so pair ``(2j, 2j+1)`` becomes ``(j, j + D/2)``."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def permute_qk_rows(wqkv: Tensor, heads: int) -> Tensor:
    """``(3C, C)`` fused q, k, v weight with q and k rows permuted per head (:func:`rope_pair_permutation`)."""
    c = wqkv.shape[1]
    head_dim = c // heads
    perm = rope_pair_permutation(head_dim)
    rows = (torch.arange(heads)[:, None] * head_dim + perm).reshape(-1)  # (C,)
    q, k, v = wqkv.chunk(3, dim=0)
    return torch.cat([q[rows], k[rows], v])


def convert_llamagen_gpt(state_dict: Mapping[str, Tensor], heads: int | None = None,
                         ffn_multiple_of: int = OFFICIAL_MULTIPLE_OF) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A LlamaGen c2i GPT state dict -> ``(generator config, state dict)`` of genarena's ``ar`` (``backbone=llama``).

    ``heads``: needed only for sizes other than the released ones; ``ffn_multiple_of``: LlamaGen's
    ``multiple_of`` (256 in every released model). The config is ``conf/generator/ar.yaml`` with the
    official architecture, dropouts and FID sampling settings. Raises
    :class:`~genarena.errors.CheckpointError` naming every missing / unexpected / mis-shaped key.
    """
    sd = {k: v for k, v in state_dict.items() if k != "freqs_cis"}
    require(SOURCE, sd, ["cls_embedding.embedding_table.weight", "tok_embeddings.weight", "output.weight",
                         "layers.0.feed_forward.w1.weight"])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k)))
    classes, c = sd["cls_embedding.embedding_table.weight"].shape
    vocab = sd["tok_embeddings.weight"].shape[0]
    size = next((name for name, (d, _, w) in OFFICIAL_SIZES.items() if (d, w) == (depth, c)), None)
    if heads is None:
        if size is None:
            raise CheckpointError(f"{SOURCE} with {depth} layers of width {c} is not a released size "
                                  f"({', '.join(OFFICIAL_SIZES)}); pass its head count (heads=...)")
        heads = OFFICIAL_SIZES[size][1]
    if c % heads or (c // heads) % 4:
        raise CheckpointError(f"{SOURCE}: width {c} with {heads} heads does not give a head size divisible by 4")
    hidden = swiglu_hidden(c, 4.0, ffn_multiple_of)
    plan: Plan = {
        "cls_embedding.embedding_table.weight": Entry((classes, c), ("class_embed.weight",)),
        "tok_embeddings.weight": Entry((vocab, c), ("token_embed.weight",)),
        "norm.weight": Entry((c,), ("head.norm.weight",)),
        "output.weight": Entry((vocab, c), ("head.proj.weight",)),
    }
    for i in range(depth):
        src, dst = f"layers.{i}.", f"transformer.blocks.{i}."
        plan.update({
            src + "attention.wqkv.weight": Entry((3 * c, c), (dst + "attn.qkv.weight",)),
            src + "attention.wo.weight": Entry((c, c), (dst + "attn.proj.weight",)),
            src + "feed_forward.w1.weight": Entry((hidden, c), (dst + "ffn.gate.weight",)),
            src + "feed_forward.w3.weight": Entry((hidden, c), (dst + "ffn.up.weight",)),
            src + "feed_forward.w2.weight": Entry((c, hidden), (dst + "ffn.down.weight",)),
            src + "attention_norm.weight": Entry((c,), (dst + "norm1.weight",)),
            src + "ffn_norm.weight": Entry((c,), (dst + "norm2.weight",)),
        })
    converted = apply_plan(SOURCE, sd, plan)
    for i in range(depth):
        key = f"transformer.blocks.{i}.attn.qkv.weight"
        converted[key] = permute_qk_rows(converted[key], heads)
    cfg_scale = OFFICIAL_CFG_SCALE.get(size, OFFICIAL_CFG_SCALE_LARGE)
    cfg = generator_preset("ar")
    cfg.update(depth=depth, width=int(c), heads=int(heads), mlp_ratio=4.0, backbone="llama",
               ffn_multiple_of=ffn_multiple_of, pos_embed="rope2d", dropout=0.1, embed_dropout=0.1,
               class_dropout=0.1, drop_path=0.0,
               sampling={"cfg": cfg_scale - 1, "cfg_schedule": "constant", "temperature": 1.0, "top_k": 0,
                         "top_p": 0.0})
    return cfg, converted


def load_official_llamagen_gpt(path: str | Path, heads: int | None = None,
                               ffn_multiple_of: int = OFFICIAL_MULTIPLE_OF) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``c2i_*.pt`` (weights under ``model``, or a plain state dict) and convert it
    (:func:`convert_llamagen_gpt`)."""
    try:
        sd = load_released(path, SOURCE, "model")
    except CheckpointError as e:
        if "has no 'model' entry" not in str(e):
            raise
        sd = load_released(path, SOURCE, None)
    return convert_llamagen_gpt(sd, heads, ffn_multiple_of)


__all__ = ["OFFICIAL_SIZES", "convert_llamagen_gpt", "load_official_llamagen_gpt", "rope_pair_permutation"]

"""LlamaGen's VQ-16 (FoundationVision/LlamaGen ``tokenizer/tokenizer_image/vq_model.py``, ``vq_ds16_c2i.pt``) -> ``vq``.

LlamaGen's encoder/decoder is the LDM one (the same blocks, attention at the lowest level in both, mid
attention) under other module names. Official layout -> genarena's
:class:`~genarena.tokenizers.VQTokenizer` with ``net=ldm`` and ``l2_norm_codes``:

- ``{encoder,decoder}.conv_blocks.{i}.res.{j}`` -> ``encoder.down.{i}.block.{j}`` / ``decoder.up.{L-1-i}.block.{j}``
  (LlamaGen lists the decoder's levels from the lowest resolution; LDM indexes them by level), likewise
  ``.attn.{j}``, ``.downsample`` and ``.upsample``;
- ``{encoder,decoder}.mid.{0,1,2}`` -> ``mid.block_1``, ``mid.attn_1``, ``mid.block_2``;
- ``quant_conv`` (``z -> codebook_embed_dim``), ``post_quant_conv``, ``conv_in``, ``norm_out``, ``conv_out``: the same;
- ``quantize.embedding.weight`` -> ``codebook.embedding.weight`` (codes are l2-normalised where used);
- ``quantize.codebook_used`` (the usage window of ``codebook_show_usage``), when present: dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from genarena.official.ldm import ldm_plan, quant_conv_plan, read_ldm_architecture
from genarena.official.presets import tokenizer_preset
from genarena.official.state_dicts import Entry, apply_plan, load_released
from genarena.tokenizers.codebook import Codebook

SOURCE = "LlamaGen VQ"
PRESET = "llamagen_vq16"
MID = {"block_1": "0", "attn_1": "1", "block_2": "2"}


def llamagen_name(key: str, levels: int) -> str:
    """An LDM-style key (genarena's name) -> LlamaGen's name for it."""
    if m := re.match(r"(encoder|decoder)\.mid\.(block_1|attn_1|block_2)\.(.*)", key):
        return f"{m.group(1)}.mid.{MID[m.group(2)]}.{m.group(3)}"
    if m := re.match(r"encoder\.down\.(\d+)\.(block|attn|downsample)(.*)", key):
        return f"encoder.conv_blocks.{m.group(1)}.{'res' if m.group(2) == 'block' else m.group(2)}{m.group(3)}"
    if m := re.match(r"decoder\.up\.(\d+)\.(block|attn|upsample)(.*)", key):
        i = levels - 1 - int(m.group(1))
        return f"decoder.conv_blocks.{i}.{'res' if m.group(2) == 'block' else m.group(2)}{m.group(3)}"
    return key


def convert_llamagen_vq(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A LlamaGen ``VQModel`` state dict -> ``(tokenizer config, state dict)`` of genarena's ``vq`` tokenizer.

    The config is ``conf/tokenizer/llamagen_vq16.yaml`` with the architecture and codebook read from the
    state dict. Raises :class:`~genarena.errors.CheckpointError` naming every missing / unexpected /
    mis-shaped key.
    """
    emb = state_dict.get("quantize.embedding.weight")  # when absent, the key check names it
    vocab_size = int(emb.shape[0]) if emb is not None else 1
    arch = read_ldm_architecture(SOURCE, state_dict, double_z=False, name=llamagen_name,
                                 embed_dim_hint=int(emb.shape[1]) if emb is not None else None)
    plan = {**ldm_plan(arch, name=llamagen_name), **quant_conv_plan(arch),
            "quantize.embedding.weight": Entry((vocab_size, arch.embed_dim), ("codebook.embedding.weight",))}
    if "quantize.codebook_used" in state_dict:
        plan["quantize.codebook_used"] = Entry(tuple(state_dict["quantize.codebook_used"].shape[:1]), ())
    converted = apply_plan(SOURCE, state_dict, plan)
    cfg = tokenizer_preset(PRESET)
    cfg.update(arch.config(), vocab_size=vocab_size)
    # genarena's own buffer, which LlamaGen does not have: per-code usage (uniform for a fresh codebook)
    converted["codebook.usage"] = Codebook(vocab_size, arch.embed_dim, cfg["beta"], cfg["l2_norm_codes"],
                                           cfg["entropy_weight"], cfg["entropy_temperature"],
                                           cfg["dead_code_threshold"], cfg["usage_decay"]).usage
    return cfg, converted


def load_official_llamagen_vq(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``vq_ds16_c2i.pt`` (weights under ``"model"``, as LlamaGen's ``sample_c2i.py``) and convert it."""
    return convert_llamagen_vq(load_released(path, SOURCE, "model"))


__all__ = ["convert_llamagen_vq", "llamagen_name", "load_official_llamagen_vq"]

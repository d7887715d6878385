"""The LDM encoder/decoder part of official tokenizer state dicts: reading its architecture, planning its keys.

The official tokenizers name the LDM modules alike (``encoder.down.{i}.block.{j}.conv1``, ...), which are
genarena's names too (:mod:`genarena.tokenizers.ldm`), up to a per-codebase renaming (``OfficialName``:
LlamaGen's ``conv_blocks.{i}.res.{j}``) and VAR's fused ``attn.qkv``. The expected keys and shapes come
from genarena's modules built on the ``meta`` device (no memory), so the plan is exactly what
``load_state_dict`` will demand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from genarena.official.state_dicts import Entry, Plan, mismatch_error, require
from genarena.tokenizers import ldm as ldm_nets

OFFICIAL_NORM_GROUPS = 32  # GroupNorm(32) in every official LDM-style tokenizer; not stored in a state dict

# an LDM-style key and the number of levels -> the key in the official state dict
OfficialName = Callable[[str, int], str]


def same_name(key: str, levels: int) -> str:
    return key


@dataclass(frozen=True)
class LDMArchitecture:
    """What a state dict says about an LDM tokenizer (``z``: encoder/decoder latent channels)."""

    image_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z: int
    embed_dim: int
    kernel: int
    encoder_attn: bool
    decoder_attn: bool
    double_z: bool

    def config(self) -> dict[str, Any]:
        """The architecture's tokenizer config keys (``net=ldm``)."""
        return {"net": "ldm", "ch": self.ch, "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
                "z_channels": self.z,
                "ldm": {"embed_dim": None if self.embed_dim == self.z else self.embed_dim,  # null: z_channels
                        "quant_conv_kernel": self.kernel, "encoder_attn": self.encoder_attn,
                        "decoder_attn": self.decoder_attn, "norm_groups": OFFICIAL_NORM_GROUPS}}


def read_ldm_architecture(source: str, state_dict: Mapping[str, Tensor], double_z: bool,
                          name: OfficialName = same_name, embed_dim_hint: int | None = None,
                          decoder_attn_if_absent: bool = True) -> LDMArchitecture:
    """Read widths, levels, blocks, latent channels and attention placement from the keys and shapes.

    Each quantity is read from the first of several keys that is present, so that a truncated file still
    reaches the full key check, which names every missing key: ``embed_dim_hint`` (e.g. the codebook's
    dimension) stands in for the code dimension when both quant convs are gone, ``decoder_attn_if_absent``
    (the official model's) for the decoder's attention when its lowest level is gone. Only a file without the
    encoder's first convolution or any tensor giving the latent channels stops here.
    """
    moments = 2 if double_z else 1
    enc_in, enc_first = name("encoder.conv_in.weight", 0), name("encoder.down.0.block.0.conv1.weight", 0)
    require(source, state_dict, [enc_in, enc_first])
    ch, image_channels = state_dict[enc_in].shape[:2]
    ch_mult = []
    while (key := name(f"encoder.down.{len(ch_mult)}.block.0.conv1.weight", 0)) in state_dict:
        ch_mult.append(max(1, round(state_dict[key].shape[0] / ch)))
    blocks = 0
    while name(f"encoder.down.0.block.{blocks}.conv1.weight", 0) in state_dict:
        blocks += 1
    levels, last = len(ch_mult), len(ch_mult) - 1
    dec_in, enc_out = name("decoder.conv_in.weight", levels), name("encoder.conv_out.weight", levels)
    post, quant = state_dict.get("post_quant_conv.weight"), state_dict.get("quant_conv.weight")
    if dec_in in state_dict:
        z = state_dict[dec_in].shape[1]
    elif post is not None:
        z = post.shape[0]
    elif enc_out in state_dict:
        z = state_dict[enc_out].shape[0] // moments
    else:
        raise mismatch_error(source, [dec_in, "post_quant_conv.weight", enc_out], [], [])
    if post is not None:
        embed_dim, kernel = post.shape[1], post.shape[-1]
    elif quant is not None:
        embed_dim, kernel = quant.shape[0] // moments, quant.shape[-1]
    else:
        embed_dim, kernel = embed_dim_hint or z, 1
    return LDMArchitecture(
        image_channels=int(image_channels), ch=int(ch), ch_mult=tuple(ch_mult), num_res_blocks=blocks, z=int(z),
        embed_dim=int(embed_dim), kernel=int(kernel),
        encoder_attn=name(f"encoder.down.{last}.attn.0.norm.weight", levels) in state_dict,
        decoder_attn=(name(f"decoder.up.{last}.attn.0.norm.weight", levels) in state_dict
                      if name(f"decoder.up.{last}.block.0.conv1.weight", levels) in state_dict
                      else decoder_attn_if_absent),
        double_z=double_z)


def ldm_plan(arch: LDMArchitecture, name: OfficialName = same_name, fused_qkv: bool = False) -> Plan:
    """Plan of the ``encoder.*`` and ``decoder.*`` keys: official key -> (shape, genarena keys).

    ``fused_qkv``: attention's ``q, k, v`` convs are one ``qkv`` conv of 3C outputs (VAR).
    """
    levels = len(arch.ch_mult)
    with torch.device("meta"):  # shapes only (and they do not depend on the GroupNorm group count)
        moments = 2 if arch.double_z else 1
        modules = {
            "encoder": ldm_nets.Encoder(arch.image_channels, arch.ch, list(arch.ch_mult), arch.num_res_blocks,
                                        moments * arch.z, arch.encoder_attn, 1),
            "decoder": ldm_nets.Decoder(arch.image_channels, arch.ch, list(arch.ch_mult), arch.num_res_blocks,
                                        arch.z, arch.decoder_attn, 1)}
    plan: Plan = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            genarena_key = f"{prefix}.{key}"
            parts = genarena_key.split(".")
            if fused_qkv and len(parts) >= 2 and parts[-2] in ("q", "k", "v"):
                base = ".".join(parts[:-2])
                official = name(f"{base}.qkv.{parts[-1]}", levels)
                targets = tuple(f"{base}.{p}.{parts[-1]}" for p in ("q", "k", "v"))
                plan[official] = Entry((3 * value.shape[0], *value.shape[1:]), targets)
            else:
                plan[name(genarena_key, levels)] = Entry(tuple(value.shape), (genarena_key,))
    return plan


def quant_conv_plan(arch: LDMArchitecture) -> Plan:
    """``quant_conv`` (``z -> embed_dim``, both doubled for a KL encoder), ``post_quant_conv`` (``embed_dim -> z``)."""
    m, k = (2 if arch.double_z else 1), arch.kernel
    return {"quant_conv.weight": Entry((m * arch.embed_dim, m * arch.z, k, k), ("quant_conv.weight",)),
            "quant_conv.bias": Entry((m * arch.embed_dim,), ("quant_conv.bias",)),
            "post_quant_conv.weight": Entry((arch.z, arch.embed_dim, k, k), ("post_quant_conv.weight",)),
            "post_quant_conv.bias": Entry((arch.z,), ("post_quant_conv.bias",))}

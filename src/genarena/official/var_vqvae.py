"""VAR's VQVAE (FoundationVision/VAR ``models/vqvae.py``, released as ``vae_ch160v4096z32.pth``) -> ``msvq``.

Official layout -> genarena's :class:`~genarena.tokenizers.MSVQTokenizer` with ``net=ldm``:

- ``encoder.*`` / ``decoder.*``: the LDM encoder/decoder, same names, except that VAR fuses attention's
  1x1 ``q, k, v`` convs into one ``attn.qkv`` conv, split here in that order.
- ``quant_conv.*`` / ``post_quant_conv.*``: the same (3x3 convs, ``Cvae -> Cvae``).
- ``quantize.embedding.weight`` -> ``quantizer.codebook.embedding.weight``.
- ``quantize.quant_resi.*`` (the ``phi`` convs) -> ``quantizer.phis.{i}.conv.*``: ``qresi_ls.{i}``
  (``PhiPartiallyShared``, ``share_quant_resi = n``), ``qresi`` (``PhiShared``, 1) or ``{i}``
  (``PhiNonShared``, 0: one per scale).
- ``quantize.ema_vocab_hit_SV`` (per-scale hit counts, ``(K, V)``): checked against ``patch_nums``, dropped.

The scales (``patch_nums``) and ``quant_resi`` are not stored in the file: they default to the preset's
(``conf/tokenizer/var_vqvae.yaml``: VAR's), as do the quantizer's settings (``beta``, ``scale_norm=none``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from genarena.official.ldm import ldm_plan, quant_conv_plan, read_ldm_architecture
from genarena.official.presets import tokenizer_preset
from genarena.official.state_dicts import Entry, Plan, apply_plan, load_released
from genarena.tokenizers.msvq import MultiScaleResidualQuantizer, num_phi_convs

SOURCE = "VAR VQVAE"
PRESET = "var_vqvae"
# the quantizer settings a state dict does not hold, taken from the preset
QUANTIZER_SETTINGS = ("beta", "l2_norm_codes", "entropy_weight", "entropy_temperature", "dead_code_threshold",
                      "usage_decay", "scale_norm")


def _phi_layout(state_dict: Mapping[str, Tensor], num_scales: int, default_share: int) -> tuple[str, int]:
    """``(official key pattern, share_quant_resi)`` of the phi convs in ``state_dict`` (``default_share``
    partially shared convs when there is none: the key check then names them as missing)."""
    keys = [k for k in state_dict if k.startswith("quantize.quant_resi.")]
    shared = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"quantize\.quant_resi\.qresi_ls\.(\d+)\.weight", k))]
    nonshared = [int(m.group(1)) for k in keys if (m := re.fullmatch(r"quantize\.quant_resi\.(\d+)\.weight", k))]
    if shared:
        return "quantize.quant_resi.qresi_ls.{i}", max(shared) + 1
    if nonshared:
        n = max(nonshared) + 1  # PhiNonShared with n convs selects like PhiPartiallyShared with n
        return "quantize.quant_resi.{i}", 0 if n == num_scales else n
    if "quantize.quant_resi.qresi.weight" in state_dict:
        return "quantize.quant_resi.qresi", 1
    return "quantize.quant_resi.qresi_ls.{i}", default_share


def _quantizer_plan(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int] | None, quant_resi: float | None,
                    dim: int | None = None, prefix: str = "") -> tuple[dict[str, Any], Plan]:
    """MultiScaleResidualQuantizer kwargs and the plan of the ``quantize.*`` keys (targets under ``prefix``);
    ``dim``: the code dimension the rest of the model expects (default: the embedding's)."""
    preset = tokenizer_preset(PRESET)
    patch_nums = preset["patch_nums"] if patch_nums is None else patch_nums
    quant_resi = preset["quant_resi"] if quant_resi is None else quant_resi
    k = len(patch_nums)
    pattern, share = _phi_layout(state_dict, k, preset["share_quant_resi"])
    # V and the code dimension from whichever tensors are present (absent ones are named by the key check)
    emb, hits = state_dict.get("quantize.embedding.weight"), state_dict.get("quantize.ema_vocab_hit_SV")
    phi = state_dict.get(pattern.format(i=0) + ".weight")
    vocab_size = emb.shape[0] if emb is not None else hits.shape[-1] if hits is not None else 0
    if dim is None:
        dim = int(emb.shape[1]) if emb is not None else int(phi.shape[0]) if phi is not None else 0
    kwargs: dict[str, Any] = dict(
        vocab_size=int(vocab_size), dim=dim, patch_nums=[int(p) for p in patch_nums], quant_resi=float(quant_resi),
        share_quant_resi=share, **{key: preset[key] for key in QUANTIZER_SETTINGS})
    plan: Plan = {"quantize.embedding.weight": Entry((int(vocab_size), dim), (f"{prefix}codebook.embedding.weight",)),
                  "quantize.ema_vocab_hit_SV": Entry((k, int(vocab_size)), ())}
    if quant_resi != 0:
        for i in range(num_phi_convs(k, share)):
            src = pattern.format(i=i)
            plan[f"{src}.weight"] = Entry((dim, dim, 3, 3), (f"{prefix}phis.{i}.conv.weight",))
            plan[f"{src}.bias"] = Entry((dim,), (f"{prefix}phis.{i}.conv.bias",))
    return kwargs, plan


def _fresh_quantizer_buffers(kwargs: dict[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """genarena's own quantizer buffers, which VAR does not have: code usage and per-scale statistics."""
    fresh = MultiScaleResidualQuantizer(**kwargs).state_dict()
    return {prefix + k: fresh[k] for k in ("codebook.usage", "res_mean", "res_cov")}


def convert_var_quantizer(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int] | None = None,
                          quant_resi: float | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """VAR's ``VectorQuantizer2`` (the ``quantize.*`` keys of a VQVAE state dict; other keys are ignored)
    -> ``(kwargs, state_dict)`` of :class:`~genarena.tokenizers.MultiScaleResidualQuantizer`.

    ``MultiScaleResidualQuantizer(**kwargs).load_state_dict(state_dict)`` then reproduces the official
    quantizer: ``scale_norm="none"``, Euclidean lookup, no entropy bonus, no dead-code restarts.
    ``patch_nums`` / ``quant_resi``: None takes the preset's (VAR's 1..16 and 0.5).
    Raises :class:`~genarena.errors.CheckpointError` naming every missing / unexpected / mis-shaped key.
    """
    sd = {k: v for k, v in state_dict.items() if k.startswith("quantize.")}
    kwargs, plan = _quantizer_plan(sd, patch_nums, quant_resi)
    return kwargs, {**apply_plan(SOURCE, sd, plan), **_fresh_quantizer_buffers(kwargs)}


def convert_var_vqvae(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int] | None = None,
                      quant_resi: float | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A VAR VQVAE state dict -> ``(tokenizer config, state dict)`` of genarena's ``msvq`` tokenizer.

    The config is ``conf/tokenizer/var_vqvae.yaml`` with the architecture read from the state dict
    (widths, levels, ``Cvae``, ``V``, phi convs); build it with the data resolution
    ``patch_nums[-1] * 2 ** (len(ch_mult) - 1)`` (256 for the released model).
    """
    emb = state_dict.get("quantize.embedding.weight")
    arch = read_ldm_architecture(SOURCE, state_dict, double_z=False,
                                 embed_dim_hint=int(emb.shape[1]) if emb is not None else None)
    q_kwargs, q_plan = _quantizer_plan(state_dict, patch_nums, quant_resi, dim=arch.embed_dim, prefix="quantizer.")
    plan = {**ldm_plan(arch, fused_qkv=True), **quant_conv_plan(arch), **q_plan}
    converted = {**apply_plan(SOURCE, state_dict, plan), **_fresh_quantizer_buffers(q_kwargs, "quantizer.")}
    cfg = tokenizer_preset(PRESET)
    cfg.update(arch.config(), vocab_size=q_kwargs["vocab_size"], patch_nums=q_kwargs["patch_nums"],
               quant_resi=q_kwargs["quant_resi"], share_quant_resi=q_kwargs["share_quant_resi"])
    return cfg, converted


def load_official_var_vqvae(path: str | Path, patch_nums: Sequence[int] | None = None,
                            quant_resi: float | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``vae_ch160v4096z32.pth`` (a plain state dict) and convert it (:func:`convert_var_vqvae`)."""
    return convert_var_vqvae(load_released(path, SOURCE, None), patch_nums, quant_resi)


__all__ = ["convert_var_quantizer", "convert_var_vqvae", "load_official_var_vqvae"]

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

The scales (``patch_nums``) and ``quant_resi`` are not stored in the file; they default to VAR's.
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

SOURCE = "VAR VQVAE"
VAR_PATCH_NUMS = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
VAR_QUANT_RESI = 0.5
VAR_SHARE_QUANT_RESI = 4
PRESET = "var_vqvae"


def _phi_layout(state_dict: Mapping[str, Tensor], num_scales: int) -> tuple[str, int]:
    """``(official key pattern, share_quant_resi)`` of the phi convs in ``state_dict`` (VAR's default, four
    partially shared convs, when there is none: the key check then names them as missing)."""
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
    return "quantize.quant_resi.qresi_ls.{i}", VAR_SHARE_QUANT_RESI


def _quantizer_plan(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int], quant_resi: float,
                    dim: int | None = None, prefix: str = "") -> tuple[dict[str, Any], Plan]:
    """MultiScaleResidualQuantizer kwargs and the plan of the ``quantize.*`` keys (targets under ``prefix``);
    ``dim``: the code dimension the rest of the model expects (default: the embedding's)."""
    from genarena.tokenizers.msvq import num_phi_convs

    k = len(patch_nums)
    pattern, share = _phi_layout(state_dict, k)
    # V and the code dimension from whichever tensors are present (absent ones are named by the key check)
    emb, hits = state_dict.get("quantize.embedding.weight"), state_dict.get("quantize.ema_vocab_hit_SV")
    phi = state_dict.get(pattern.format(i=0) + ".weight")
    vocab_size = emb.shape[0] if emb is not None else hits.shape[-1] if hits is not None else 0
    if dim is None:
        dim = int(emb.shape[1]) if emb is not None else int(phi.shape[0]) if phi is not None else 0
    kwargs: dict[str, Any] = dict(
        vocab_size=int(vocab_size), dim=dim, patch_nums=[int(p) for p in patch_nums], quant_resi=float(quant_resi),
        share_quant_resi=share, beta=0.25, l2_norm_codes=False, entropy_weight=0.0, entropy_temperature=1.0,
        dead_code_threshold=0.0, usage_decay=0.99, scale_norm="none")
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
    from genarena.tokenizers.msvq import MultiScaleResidualQuantizer

    fresh = MultiScaleResidualQuantizer(**kwargs).state_dict()
    return {prefix + k: fresh[k] for k in ("codebook.usage", "res_mean", "res_cov")}


def convert_var_quantizer(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                          quant_resi: float = VAR_QUANT_RESI) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """VAR's ``VectorQuantizer2`` (the ``quantize.*`` keys of a VQVAE state dict; other keys are ignored)
    -> ``(kwargs, state_dict)`` of :class:`~genarena.tokenizers.MultiScaleResidualQuantizer`.

    ``MultiScaleResidualQuantizer(**kwargs).load_state_dict(state_dict)`` then reproduces the official
    quantizer: ``scale_norm="none"``, Euclidean lookup, no entropy bonus, no dead-code restarts.
    Raises :class:`~genarena.errors.CheckpointError` naming every missing / unexpected / mis-shaped key.
    """
    sd = {k: v for k, v in state_dict.items() if k.startswith("quantize.")}
    kwargs, plan = _quantizer_plan(sd, patch_nums, quant_resi)
    return kwargs, {**apply_plan(SOURCE, sd, plan), **_fresh_quantizer_buffers(kwargs)}


def convert_var_vqvae(state_dict: Mapping[str, Tensor], patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                      quant_resi: float = VAR_QUANT_RESI) -> tuple[dict[str, Any], dict[str, Tensor]]:
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


def load_official_var_vqvae(path: str | Path, patch_nums: Sequence[int] = VAR_PATCH_NUMS,
                            quant_resi: float = VAR_QUANT_RESI) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``vae_ch160v4096z32.pth`` (a plain state dict) and convert it (:func:`convert_var_vqvae`)."""
    return convert_var_vqvae(load_released(path, SOURCE, None), patch_nums, quant_resi)


__all__ = ["VAR_PATCH_NUMS", "convert_var_quantizer", "convert_var_vqvae", "load_official_var_vqvae"]

"""MAR (LTH14/mar ``models/mar.py``, released as ``checkpoint-last.pth`` of MAR-B/L/H) -> ``mar``.

Official layout -> genarena's :class:`~genarena.generators.MAR` with ``backbone=vit``,
``diffusion_loss=learned_sigma``:

- ``class_emb.weight`` and ``fake_latent`` (the null class) -> the rows of ``class_embed.weight``;
- ``z_proj``, ``z_proj_ln``: the same names; ``encoder_pos_embed_learned`` -> ``enc_pos_embed``,
  ``decoder_pos_embed_learned`` -> ``dec_pos_embed``, ``diffusion_pos_embed_learned`` -> ``diff_pos_embed``,
  ``mask_token`` -> ``mask_embed``, ``decoder_embed`` -> ``dec_embed``, ``encoder_norm`` / ``decoder_norm`` ->
  ``enc_norm`` / ``dec_norm``;
- ``{encoder,decoder}_blocks.{i}`` (timm ``Block``: ``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
  ``mlp.fc1``, ``mlp.fc2``) -> ``{encoder,decoder}.blocks.{i}`` with the same inner names;
- ``diffloss.net`` (``SimpleMLPAdaLN``): ``time_embed.mlp.{0,2}`` -> ``time_embed.{0,2}``;
  ``res_blocks.{i}.in_ln`` / ``mlp`` / ``adaLN_modulation.1`` -> ``blocks.{i}.norm`` / ``mlp`` / ``ada.1``;
  ``final_layer.adaLN_modulation.1`` / ``final_layer.linear`` -> ``final_ada.1`` / ``out``; ``cond_embed``,
  ``input_proj``: the same. genarena's ``x0_bound`` starts at zero (no clipping, as MAR samples).

Width, depths, MLP ratio, buffer, token size, classes and the denoiser's size are read from the shapes; the
head count is not in the weights: MAR-B/L/H (width 768/1024/1280) have 12/16/16 heads, others need ``heads``.
Training-only values (dropout 0.1, class dropout 0.1, mask ratio min 0.7, 4 noise draws per token) are MAR's
defaults; sampling is the README's evaluation setting for MAR-B/L/H (256 steps, 100 diffusion steps, linear
guidance ``cfg`` 2.9/3.0/3.2, i.e. genarena's ``w = cfg - 1``, temperature 1.0), else MAR's defaults (64 steps,
no guidance).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genarena.errors import CheckpointError
from genarena.official.presets import generator_preset
from genarena.official.state_dicts import Entry, Plan, apply_plan, load_released, mismatch_error, require

SOURCE = "MAR"
# the released models: width -> (heads, guidance scale of the reported FIDs)
RELEASED = {768: (12, 2.9), 1024: (16, 3.0), 1280: (16, 3.2)}
# MAR's defaults (main_mar.py / models/mar.py) for what a state dict does not hold
TRAINING = {"dropout": 0.1, "class_dropout": 0.1, "mask_ratio_min": 0.7, "diffusion_batch_mul": 4,
            "diffusion_timesteps": 1000, "noise_schedule": "cosine"}
DEFAULT_SAMPLING = {"cfg": 0.0, "cfg_schedule": "linear", "temperature": 1.0, "steps": 64, "diffusion_steps": 100}
VIT_BLOCK = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
             "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
# the keys whose shapes give the architecture, and their number of dimensions
ARCHITECTURE_KEYS = {"class_emb.weight": 2, "z_proj.weight": 2, "encoder_pos_embed_learned": 3,
                     "diffusion_pos_embed_learned": 3, "encoder_blocks.0.mlp.fc1.weight": 2,
                     "diffloss.net.input_proj.weight": 2}


def count_indexed(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """1 + the largest ``i`` of keys ``{prefix}.{i}.*`` (0 if none)."""
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = [int(m.group(1)) for k in state_dict if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def linear(plan: Plan, official: str, genarena: str, out_dim: int, in_dim: int) -> None:
    plan[f"{official}.weight"] = Entry((out_dim, in_dim), (f"{genarena}.weight",))
    plan[f"{official}.bias"] = Entry((out_dim,), (f"{genarena}.bias",))


def layer_norm(plan: Plan, official: str, genarena: str, dim: int) -> None:
    plan[f"{official}.weight"] = Entry((dim,), (f"{genarena}.weight",))
    plan[f"{official}.bias"] = Entry((dim,), (f"{genarena}.bias",))


def mar_plan(width: int, hidden: int, token_dim: int, positions: int, seq_len: int, num_classes: int,
             encoder_depth: int, decoder_depth: int, diffusion_width: int, diffusion_depth: int) -> Plan:
    """Every key of an official MAR state dict of this size, its shape and genarena's key."""
    c, w = width, diffusion_width
    plan: Plan = {"class_emb.weight": Entry((num_classes, c), ()),  # both join class_embed (convert_mar)
                  "fake_latent": Entry((1, c), ()),
                  "mask_token": Entry((1, 1, c), ("mask_embed",)),
                  "encoder_pos_embed_learned": Entry((1, positions, c), ("enc_pos_embed",)),
                  "decoder_pos_embed_learned": Entry((1, positions, c), ("dec_pos_embed",)),
                  "diffusion_pos_embed_learned": Entry((1, seq_len, c), ("diff_pos_embed",))}
    linear(plan, "z_proj", "z_proj", c, token_dim)
    layer_norm(plan, "z_proj_ln", "z_proj_ln", c)
    linear(plan, "decoder_embed", "dec_embed", c, c)
    layer_norm(plan, "encoder_norm", "enc_norm", c)
    layer_norm(plan, "decoder_norm", "dec_norm", c)
    shapes = {"norm1": (c,), "norm2": (c,), "attn.qkv": (3 * c, c), "attn.proj": (c, c), "mlp.fc1": (hidden, c),
              "mlp.fc2": (c, hidden)}
    for stack, depth in (("encoder", encoder_depth), ("decoder", decoder_depth)):
        for i in range(depth):
            for key in VIT_BLOCK:
                module, kind = key.rsplit(".", 1)
                shape = shapes[module] if kind == "weight" else shapes[module][:1]
                plan[f"{stack}_blocks.{i}.{key}"] = Entry(shape, (f"{stack}.blocks.{i}.{key}",))
    net = "diffloss.net"
    linear(plan, f"{net}.time_embed.mlp.0", f"{net}.time_embed.0", w, 256)
    linear(plan, f"{net}.time_embed.mlp.2", f"{net}.time_embed.2", w, w)
    linear(plan, f"{net}.cond_embed", f"{net}.cond_embed", w, c)
    linear(plan, f"{net}.input_proj", f"{net}.input_proj", w, token_dim)
    for i in range(diffusion_depth):
        layer_norm(plan, f"{net}.res_blocks.{i}.in_ln", f"{net}.blocks.{i}.norm", w)
        linear(plan, f"{net}.res_blocks.{i}.mlp.0", f"{net}.blocks.{i}.mlp.0", w, w)
        linear(plan, f"{net}.res_blocks.{i}.mlp.2", f"{net}.blocks.{i}.mlp.2", w, w)
        linear(plan, f"{net}.res_blocks.{i}.adaLN_modulation.1", f"{net}.blocks.{i}.ada.1", 3 * w, w)
    linear(plan, f"{net}.final_layer.adaLN_modulation.1", f"{net}.final_ada.1", 2 * w, w)
    linear(plan, f"{net}.final_layer.linear", f"{net}.out", 2 * token_dim, w)  # eps and the variance output
    return plan


def convert_mar(state_dict: Mapping[str, Tensor], heads: int | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """An official MAR state dict -> ``(generator config, state dict)`` of genarena's ``mar`` (``backbone=vit``,
    ``diffusion_loss=learned_sigma``). ``heads``: the attention heads, needed unless the width is MAR-B/L/H's.
    Raises :class:`~genarena.errors.CheckpointError` naming every missing, unexpected or mis-shaped key."""
    require(SOURCE, state_dict, list(ARCHITECTURE_KEYS))
    misshaped = [f"{k} {tuple(state_dict[k].shape)} is not {n}-D" for k, n in ARCHITECTURE_KEYS.items()
                 if state_dict[k].ndim != n]
    if misshaped:
        raise mismatch_error(SOURCE, [], [], misshaped)
    num_classes, width = state_dict["class_emb.weight"].shape
    token_dim = state_dict["z_proj.weight"].shape[1]
    seq_len = state_dict["diffusion_pos_embed_learned"].shape[1]
    positions = state_dict["encoder_pos_embed_learned"].shape[1]
    hidden = state_dict["encoder_blocks.0.mlp.fc1.weight"].shape[0]
    diffusion_width = state_dict["diffloss.net.input_proj.weight"].shape[0]
    depths = {name: count_indexed(state_dict, prefix) for name, prefix in (
        ("encoder", "encoder_blocks"), ("decoder", "decoder_blocks"), ("diffusion", "diffloss.net.res_blocks"))}
    plan = mar_plan(width, hidden, token_dim, positions, seq_len, num_classes, depths["encoder"], depths["decoder"],
                    diffusion_width, depths["diffusion"])
    out = apply_plan(SOURCE, state_dict, plan)
    if heads is None:
        if width not in RELEASED:
            raise CheckpointError(f"{SOURCE} state dict of width {width} is not MAR-B/L/H's (widths "
                                  f"{', '.join(map(str, RELEASED))}); its head count is not in the weights: pass heads")
        heads = RELEASED[width][0]
    out["class_embed.weight"] = torch.cat([state_dict["class_emb.weight"], state_dict["fake_latent"]])  # null: last
    out["diffloss.x0_bound"] = torch.zeros(token_dim)
    sampling = dict(DEFAULT_SAMPLING)
    if width in RELEASED:
        sampling.update(cfg=RELEASED[width][1] - 1.0, steps=256)
    cfg = generator_preset("mar")
    cfg.update(TRAINING, backbone="vit", order="random", diffusion_loss="learned_sigma", qk_norm=False,
               drop_path=0.0, depth=depths["encoder"] + depths["decoder"], width=int(width), heads=heads,
               mlp_ratio=hidden / width, encoder_depth=depths["encoder"], decoder_depth=depths["decoder"],
               buffer_size=positions - seq_len, diffusion_width=int(diffusion_width),
               diffusion_depth=depths["diffusion"])
    cfg["sampling"].update(sampling)
    return cfg, out


def load_official_mar(path: str | Path, ema: bool = True,
                      heads: int | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read MAR's ``checkpoint-last.pth`` (``torch.load(weights_only=True)``) and convert its EMA weights
    (``model_ema``; ``ema=False``: ``model``) with :func:`convert_mar`."""
    return convert_mar(load_released(path, SOURCE, "model_ema" if ema else "model"), heads=heads)

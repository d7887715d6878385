"""MAR's KL-16 (LTH14/mar ``models/vae.py`` ``AutoencoderKL``, released as ``kl16.ckpt``) -> ``kl``.

Official layout -> genarena's :class:`~genarena.tokenizers.KLTokenizer` with ``net=ldm``: every key keeps its
name (``encoder.*``, ``decoder.*`` as in LDM; ``quant_conv`` maps the ``2 z`` encoder moments to
``2 embed_dim``, ``post_quant_conv`` maps ``embed_dim`` to ``z``). genarena's ``scale_factor`` buffer is MAR's
latent scale, the preset's 0.2325 (``engine_mar.py``: tokens are ``posterior.sample() * 0.2325``), unless
``scale_factor`` is given. Keys under ``loss.`` (LDM's training loss: LPIPS and discriminator), if a
file carries them, are dropped; any other key outside the architecture is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from genarena.official.ldm import ldm_plan, quant_conv_plan, read_ldm_architecture
from genarena.official.presets import tokenizer_preset
from genarena.official.state_dicts import apply_plan, load_released

SOURCE = "MAR KL-16"
PRESET = "mar_kl16"
TRAINING_LOSS_PREFIX = "loss."


def convert_mar_kl(state_dict: Mapping[str, Tensor], scale_factor: float | None = None,
                   ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A MAR ``AutoencoderKL`` state dict -> ``(tokenizer config, state dict)`` of genarena's ``kl`` tokenizer.

    The config is ``conf/tokenizer/mar_kl16.yaml`` with the architecture read from the state dict; build it
    with the data resolution (256 for the released model: 16 x 16 tokens of 16 channels). Raises
    :class:`~genarena.errors.CheckpointError` naming every missing / unexpected / mis-shaped key.
    """
    sd = {k: v for k, v in state_dict.items() if not k.startswith(TRAINING_LOSS_PREFIX)}
    arch = read_ldm_architecture(SOURCE, sd, double_z=True, decoder_attn_if_absent=False)
    converted = apply_plan(SOURCE, sd, {**ldm_plan(arch), **quant_conv_plan(arch)})
    cfg = tokenizer_preset(PRESET)
    scale_factor = float(cfg["scale_factor"] if scale_factor is None else scale_factor)
    converted["scale_factor"] = torch.tensor(scale_factor)
    cfg.update(arch.config(), scale_factor=scale_factor)
    return cfg, converted


def load_official_mar_kl(path: str | Path, scale_factor: float | None = None,
                         ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Read ``kl16.ckpt`` (weights under ``"model"``, as MAR's ``init_from_ckpt``) and convert it."""
    return convert_mar_kl(load_released(path, SOURCE, "model"), scale_factor)


__all__ = ["convert_mar_kl", "load_official_mar_kl"]
